"""Batch scoring benchmark: the local engine against LightGBM's own predict, and the Spark engine.

Set-up (not timed): a champion trained by `churn pipeline run` in a fresh CHURN_HOME, and
N synthetic customers written to Parquet. Then, in one run:

- ours: `churn batch score --input in.parquet --output out.parquet` (the local engine: read,
  validate, transform, predict, write, in Arrow batches), its rows/s as the job reports it and its
  peak RSS as the kernel reports it for that process;
- reference: `Booster.predict` of the same model on the already-built numpy matrix of the same
  rows, with the same thread count (what scoring would cost with no I/O, validation or features);
- spark: the same job with `--engine spark` in local[2] mode.

    uv run python bench/batch.py                 # 1 million rows
    uv run python bench/batch.py --rows 10000000 # 10 million rows (peak RSS target: under 2 GB)
    uv run python bench/batch.py --skip-spark
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.7


def main() -> None:
    """Run the benchmark and print a table, then one JSON line."""
    args = _arguments()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="churn-bench-batch-"))
    env = {**os.environ, "CHURN_HOME": str(workdir / "churn-home"), "CHURN_BATCH__SPARK_MASTER": "local[2]"}
    try:
        source = _setup(workdir, env, args.rows)
        ours = _score(source, workdir / "scores.parquet", env, "local")
        reference = _raw_predict(source, env)
        spark = None if args.skip_spark else _score(source, workdir / "scores-spark.parquet", env, "spark")
        _report(args.rows, ours, reference, spark)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-spark", action="store_true")
    parser.add_argument("--workdir", help="keep files here instead of a temporary folder")
    return parser.parse_args()


def _churn(*args: str, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """Run `churn args --json` in a child; return its JSON and that child's own peak RSS in MB."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "churn_mlops", *args, "--json"], env=env, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode:
            raise SystemExit(f"churn {' '.join(args)} failed:\n{err.read().decode()[-3000:]}")
        return json.loads(out.read()), usage.ru_maxrss / 1024


def _setup(workdir: Path, env: dict[str, str], rows: int) -> Path:
    started = time.perf_counter()
    _churn("pipeline", "run", env=env)
    trained = time.perf_counter() - started
    source = workdir / "customers.parquet"
    started = time.perf_counter()
    _churn("data", "generate", "--rows", str(rows), "--output", str(source), "--seed", "11", env=env)
    print(
        f"set-up: champion trained in {trained:.1f} s, {rows:,} customers generated in "
        f"{time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return source


def _score(source: Path, output: Path, env: dict[str, str], engine: str) -> dict[str, Any]:
    summary, peak = _churn(
        "batch", "score", "--input", str(source), "--output", str(output), "--engine", engine, env=env
    )
    return {**summary, "peak_rss_mb": round(peak, 1)}


def _raw_predict(source: Path, env: dict[str, str]) -> dict[str, float]:
    """lightgbm's Booster.predict alone on the prebuilt matrix, in a child so memory is not shared."""
    code = """
import json, sys, time
import lightgbm as lgb
import polars as pl
from churn_mlops.data.spec import load_spec
from churn_mlops.data.validation import validate
from churn_mlops.features import transform
from churn_mlops.models.registry import Registry
from churn_mlops.settings import Settings

settings = Settings()
_, predictor = Registry.from_settings(settings).load("champion")
valid = validate(pl.read_parquet(sys.argv[1]).drop("Churn"), load_spec(), require_target=False).valid
matrix = transform(valid, predictor.features)
booster = lgb.Booster(model_str=predictor.booster.model_text)
times = []
for _ in range(2):
    started = time.perf_counter()
    booster.predict(matrix, raw_score=True, num_threads=settings.batch.num_threads)
    times.append(time.perf_counter() - started)
print(json.dumps({"rows": matrix.shape[0], "seconds": min(times)}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code, str(source)], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise SystemExit(f"reference failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {"seconds": figures["seconds"], "rows_per_s": figures["rows"] / figures["seconds"]}


def _report(
    rows: int, ours: dict[str, Any], reference: dict[str, float], spark: dict[str, Any] | None
) -> None:
    ratio = ours["rows_per_s"] / reference["rows_per_s"]
    print(f"{'':44}{'rows':>12}{'seconds':>10}{'rows/s':>14}{'peak RSS MB':>14}")
    print(
        f"{'local engine (read+validate+score+write)':44}{rows:>12,}{ours['seconds']:>10.2f}"
        f"{ours['rows_per_s']:>14,}{ours['peak_rss_mb']:>14,.0f}"
    )
    print(
        f"{'reference: Booster.predict on the matrix':44}{rows:>12,}{reference['seconds']:>10.2f}"
        f"{round(reference['rows_per_s']):>14,}{'':>14}"
    )
    if spark:
        print(
            f"{'spark engine, local[2]':44}{rows:>12,}{spark['seconds']:>10.2f}{spark['rows_per_s']:>14,}"
            f"{spark['peak_rss_mb']:>14,.0f}"
        )
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"ratio (local / raw predict rows/s): {ratio:.3f}   target >= {TARGET_RATIO}   {verdict}")
    print(
        json.dumps(
            {
                "rows": rows,
                "local_rows_per_s": ours["rows_per_s"],
                "local_seconds": ours["seconds"],
                "raw_predict_rows_per_s": round(reference["rows_per_s"]),
                "raw_predict_seconds": round(reference["seconds"], 3),
                "ratio": round(ratio, 3),
                "target": TARGET_RATIO,
                "passed": ratio >= TARGET_RATIO,
                "spark_rows_per_s": spark["rows_per_s"] if spark else None,
                "peak_rss_mb": ours["peak_rss_mb"],
                "spark_peak_rss_mb": spark["peak_rss_mb"] if spark else None,
                "rows_quarantined": ours["rows_quarantined"],
            }
        )
    )


if __name__ == "__main__":
    main()
