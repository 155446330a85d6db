"""Temporary files of batch runs: swept once their run has ended, never while it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from churn_mlops.batch.staging import claim_file, staging_folder, sweep

HOLDER = """
import sys
from pathlib import Path
from churn_mlops.batch.staging import claim_file
claim = claim_file(Path(sys.argv[1]), prefix="scores.parquet.")
print(claim.path, flush=True)
sys.stdin.read()
"""


def test_the_staging_folder_is_a_hidden_sibling_of_the_output(tmp_path: Path) -> None:
    assert staging_folder(tmp_path / "scores") == tmp_path / ".scores.staging"
    assert staging_folder(tmp_path / "s.parquet") == tmp_path / ".s.parquet.staging"


def test_a_sweep_removes_temporaries_of_ended_runs_and_keeps_a_running_ones(tmp_path: Path) -> None:
    folder = tmp_path / ".scores.staging"
    folder.mkdir()
    orphan = folder / "scores.parquet.killed.tmp"
    orphan.write_bytes(b"half a file")
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        running = Path(holder.stdout.readline().strip())
        assert sweep(folder) == [orphan]
        assert running.exists(), "a concurrent run keeps its temporary file"
        holder.stdin.close()
        holder.wait(timeout=30)
    assert sweep(folder) == [running], "once its run has ended, the file is swept"
    assert not folder.exists(), "an empty staging folder goes too"


def test_a_claimed_file_moves_into_place_and_a_discarded_one_goes(tmp_path: Path) -> None:
    folder = staging_folder(tmp_path / "out.parquet")
    kept = claim_file(folder, prefix="out.parquet.")
    kept.path.write_bytes(b"scores")
    dropped = claim_file(folder, prefix="out.parquet.")
    assert sweep(folder) == [], "this process's own claims are in use"
    kept.commit_to(tmp_path / "out.parquet")
    dropped.discard()
    dropped.discard()
    assert (tmp_path / "out.parquet").read_bytes() == b"scores"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
