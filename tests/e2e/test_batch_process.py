"""`churn batch score` as a real process started by its path: SIGKILL mid-run, and the Spark engine."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from churn_mlops.data.synthetic import generate
from tests.integration.serving_fixtures import TrainedHome, make_trained_home
from tests.integration.test_batch_spark import require_spark

pytestmark = pytest.mark.slow
CHURN = Path(sys.prefix) / "bin" / "churn"  # the environment's console script, as a service would run it
RUN_DATE = "2026-11-01"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """One trained home for the module's runs."""
    return make_trained_home(tmp_path_factory.mktemp("batch-process"))


def _bare_environment(home: TrainedHome, **extra: str) -> dict[str, str]:
    """The environment of a cron line or a service: no virtual environment on PATH or in VIRTUAL_ENV."""
    dropped = {
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYSPARK_PYTHON",
        "PYSPARK_DRIVER_PYTHON",
        "CHURN_BATCH__BATCH_ROWS",
    }
    environment = {k: v for k, v in home.environment().items() if k not in dropped}
    return {**environment, "PATH": "/usr/bin:/bin", **extra}


def _churn(home: TrainedHome, *args: str, **extra: str) -> dict[str, object]:
    done = subprocess.run(
        [str(CHURN), "batch", "score", *args, "--json"],
        env=_bare_environment(home, **extra),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, object] = json.loads(done.stdout)
    return summary


def _files(root: Path) -> set[Path]:
    try:
        return {path for path in root.rglob("*") if path.is_file()}
    except FileNotFoundError:  # a folder went while it was listed: look again next time
        return set()


def _wait_for_new_files(process: subprocess.Popen[bytes], *roots: Path, timeout: float = 120.0) -> None:
    """Wait until the run has written a file under each root, failing if the run ends first."""
    before = {root: _files(root) for root in roots}
    deadline = time.monotonic() + timeout
    while not all(_files(root) - before[root] for root in roots):
        assert process.poll() is None, "the run ended before it could be killed; give it more rows"
        assert time.monotonic() < deadline, "the run wrote no files"
        time.sleep(0.01)


def test_killed_runs_leave_no_files_that_readers_or_later_runs_see(
    trained: TrainedHome, tmp_path: Path
) -> None:
    customers, many = tmp_path / "customers.csv", tmp_path / "many.csv"
    pl.concat(list(generate(2000, seed=4))).write_csv(customers)
    pl.concat(list(generate(60_000, seed=8, bad_fraction=0.05))).write_csv(many)
    scores = tmp_path / "scores"
    _churn(trained, "--input", str(customers), "--output", str(scores), "--run-date", RUN_DATE)
    partition = scores / f"run_date={RUN_DATE}" / "scores.parquet"
    before = partition.read_bytes()
    quarantine = trained.home / "quarantine" / "telco"
    finished = set(quarantine.glob("*.parquet")) if quarantine.exists() else set()
    run = [
        str(CHURN),
        "batch",
        "score",
        "--input",
        str(many),
        "--output",
        str(scores),
        "--run-date",
        RUN_DATE,
    ]
    environment = _bare_environment(trained, CHURN_BATCH__BATCH_ROWS="500")
    for _ in range(2):
        process = subprocess.Popen(run, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_new_files(process, tmp_path, trained.home / "quarantine")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        assert partition.read_bytes() == before, "a killed run keeps the previous output"
        assert sorted(scores.rglob("*")) == [partition.parent, partition], "nothing else in the folder"
        assert set(quarantine.glob("*")) == finished, "no quarantine file from an unfinished run"
    assert pl.read_parquet(scores).height == 2000, "readers of the folder see the committed rows only"
    leftover = list((tmp_path / ".scores.staging").iterdir())
    assert len(leftover) == 1, "each run removes the temporaries of the killed runs before it"

    summary = _churn(trained, "--input", str(customers), "--output", str(scores), "--run-date", "2026-11-02")
    assert not (tmp_path / ".scores.staging").exists(), "the next run of the output removes them"
    assert not (trained.home / "quarantine" / ".telco.staging").exists()
    assert summary["quarantine_path"] is None
    assert pl.read_parquet(scores).get_column("run_date").value_counts().height == 2


@pytest.mark.spark
def test_the_spark_engine_runs_when_churn_is_started_by_its_path(
    trained: TrainedHome, tmp_path: Path
) -> None:
    require_spark()
    customers = tmp_path / "customers.csv"
    pl.concat(list(generate(1500, seed=6))).write_csv(customers)
    output = tmp_path / "scores.parquet"
    spark = _churn(
        trained,
        "--input",
        str(customers),
        "--output",
        str(output),
        "--engine",
        "spark",
        "--run-date",
        RUN_DATE,
    )
    assert spark["rows_scored"] == 1500
    local = _churn(
        trained,
        "--input",
        str(customers),
        "--output",
        str(tmp_path / "local.parquet"),
        "--run-date",
        RUN_DATE,
    )
    assert (
        pl.read_parquet(output).drop("scored_at").equals(pl.read_parquet(local["output"]).drop("scored_at"))
    )
    assert not (trained.home / "batch" / ".spark").exists(), "the run's scratch folder is gone"
