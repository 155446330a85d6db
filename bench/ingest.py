"""Ingestion throughput benchmark: `ingest` (read + validate + quarantine + lake write) vs plain polars.

What it measures
    1. Set-up (not timed against the target, but reported): `--rows` synthetic Telco-schema customers,
       about `--bad-fraction` of them deliberately broken, are written to one CSV file.
    2. Reference: `pl.read_csv(csv, infer_schema=False).write_parquet(out)`, timed end to end: what
       "CSV in, Parquet out" costs with polars alone, reading every column as text exactly as the
       ingest reader does (a bare `pl.read_csv` fails on the broken rows; `--reference typed`
       reads with type inference and `ignore_errors=True` instead).
    3. Ours: `churn_mlops.data.ingest.ingest(...)` on the same CSV: read it as text, normalise and
       validate every row, quarantine the broken ones, hash the valid rows and write them as a lake
       version. Each repeat uses a fresh lake root, so the "version already exists" shortcut is
       never taken and every run does the full work.

    Reference and ours run alternately `--repeat` times; the best (fastest) run of each is used for
    rows/s and the ratio (noise on a shared machine only ever adds time), the median is shown too.
    The target is ratio = ours rows/s / reference rows/s >= 0.3. Peak RSS is the whole process's
    high-water mark (resource.getrusage), so it is the larger of the two.

Output
    A readable table, then as the last line of stdout one JSON object (rows, ingest_rows_per_s,
    reference_rows_per_s, ratio, target, peak_rss_mb, ...) for scripts and CI.

How to run
    uv run python bench/ingest.py [--rows N] [--repeat K] [--bad-fraction F] [--reference text|typed]
                                  [--workdir DIR]

    Defaults: 1,000,000 rows, 3 repeats, 0.1% bad rows, a temporary directory removed at the end
    (a `--workdir` you give is kept, with the CSV, so you can profile against it).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from churn_mlops.data.ingest import IngestResult, ingest
from churn_mlops.data.lake import Lake
from churn_mlops.data.sinks import write_frames
from churn_mlops.data.sources import Source
from churn_mlops.data.spec import DatasetSpec, load_spec
from churn_mlops.data.synthetic import generate

TARGET_RATIO = 0.3
# How the reference reads the CSV. A bare pl.read_csv(csv) fails on the deliberately broken rows
# ("twelve" in an integer column), so: "text" reads every column as a string, exactly as ingest's
# CSV reader does (the default, like for like); "typed" infers types and nulls what does not parse.
READ_OPTIONS: dict[str, dict[str, Any]] = {
    "text": {"infer_schema": False},
    "typed": {"ignore_errors": True},
}


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds of every repeat of one contender."""

    name: str
    seconds: list[float]

    @property
    def best(self) -> float:
        """The fastest run."""
        return min(self.seconds)

    @property
    def median(self) -> float:
        """The median run."""
        return statistics.median(self.seconds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows to generate")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of reference and ours")
    parser.add_argument("--bad-fraction", type=float, default=0.001, help="share of rows broken on purpose")
    parser.add_argument(
        "--reference", choices=sorted(READ_OPTIONS), default="text", help="how the reference reads the CSV"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="kept if given; default a removed tempdir")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1 or not 0 <= args.bad_fraction < 1:
        parser.error("need --rows >= 1, --repeat >= 1 and 0 <= --bad-fraction < 1")
    return args


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024


def make_csv(path: Path, rows: int, bad_fraction: float) -> float:
    """Write the synthetic CSV; return the seconds it took."""
    start = time.perf_counter()
    written = write_frames(
        generate(rows, seed=0, bad_fraction=bad_fraction), Source(str(path)), overwrite=True
    )
    if written != rows:
        raise RuntimeError(f"generated {written} rows, expected {rows}")
    return time.perf_counter() - start


def run_reference(csv: Path, out: Path, mode: str) -> float:
    """Polars alone: read the CSV (as text, or typed) and write it as Parquet; return seconds."""
    options = READ_OPTIONS[mode]
    gc.collect()
    start = time.perf_counter()
    pl.read_csv(csv, **options).write_parquet(out)
    return time.perf_counter() - start


def run_ingest(csv: Path, spec: DatasetSpec, root: Path) -> tuple[float, IngestResult]:
    """The full ingestion into a fresh lake under `root`; return seconds and the result."""
    lake, quarantine = Lake(root / "lake"), root / "quarantine"
    gc.collect()
    start = time.perf_counter()
    result = ingest(Source(str(csv)), spec, lake=lake, quarantine_dir=quarantine)
    seconds = time.perf_counter() - start
    if result.version is None or not result.version.created:
        raise RuntimeError("ingest did not create a new lake version; the run is not comparable")
    return seconds, result


def run_all(csv: Path, workdir: Path, repeat: int, mode: str) -> tuple[Timings, Timings, IngestResult]:
    """Alternate reference and ingest `repeat` times; clean each run's output outside the timing."""
    spec = load_spec()
    reference, ours = (
        Timings(f"polars read_csv ({mode}) + write_parquet", []),
        Timings("ingest + validate", []),
    )
    result: IngestResult | None = None
    for i in range(repeat):
        out = workdir / "reference.parquet"
        reference.seconds.append(run_reference(csv, out, mode))
        out.unlink()
        root = workdir / f"run-{i}"
        seconds, result = run_ingest(csv, spec, root)
        ours.seconds.append(seconds)
        shutil.rmtree(root)
        print(f"  repeat {i + 1}/{repeat}: reference {reference.seconds[-1]:.2f} s, ours {seconds:.2f} s")
    if result is None:
        raise RuntimeError("no ingest run")
    return reference, ours, result


def summary(
    rows: int, reference: Timings, ours: Timings, result: IngestResult, mode: str
) -> dict[str, object]:
    """The machine-readable result."""
    reference_rate, ours_rate = rows / reference.best, rows / ours.best
    return {
        "rows": rows,
        "repeat": len(ours.seconds),
        "ingest_seconds": round(ours.best, 3),
        "ingest_seconds_median": round(ours.median, 3),
        "ingest_rows_per_s": round(ours_rate),
        "reference_seconds": round(reference.best, 3),
        "reference_seconds_median": round(reference.median, 3),
        "reference_rows_per_s": round(reference_rate),
        "ratio": round(ours_rate / reference_rate, 3),
        "target": TARGET_RATIO,
        "reference_mode": mode,
        "passed": ours_rate / reference_rate >= TARGET_RATIO,
        "rows_valid": result.report.rows_valid,
        "rows_quarantined": result.report.rows_quarantined,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "polars": pl.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def table(rows: int, reference: Timings, ours: Timings, result: dict[str, object]) -> str:
    """A plain-text table of the results."""
    lines = [f"{'':40} {'rows':>10} {'best s':>8} {'median s':>9} {'rows/s (best)':>14}"]
    for timing in (reference, ours):
        rate = rows / timing.best
        lines.append(f"{timing.name:40} {rows:>10,} {timing.best:>8.2f} {timing.median:>9.2f} {rate:>14,.0f}")
    verdict = "PASS" if result["passed"] else "FAIL"
    lines += [
        f"ratio (ours / reference rows/s): {result['ratio']:.3f}   target >= {TARGET_RATIO}   {verdict}",
        f"valid {result['rows_valid']:,}, quarantined {result['rows_quarantined']:,}; "
        f"peak RSS {result['peak_rss_mb']:,.1f} MiB",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 whatever the ratio (it is reported, not enforced)."""
    args = parse_args(argv)
    own_dir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="churn-bench-")) if own_dir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        csv = workdir / "customers.csv"
        seconds = make_csv(csv, args.rows, args.bad_fraction)
        size_mb = csv.stat().st_size / 2**20
        print(f"set-up: generated {args.rows:,} rows ({size_mb:,.1f} MiB CSV) in {seconds:.2f} s (not timed)")
        reference, ours, result = run_all(csv, workdir, args.repeat, args.reference)
        outcome = summary(args.rows, reference, ours, result, args.reference)
        print(table(args.rows, reference, ours, outcome))
        print(json.dumps(outcome))
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
