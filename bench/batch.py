"""Batch scoring benchmark: the local engine, with and without compiled trees, against LightGBM's own predict.

Set-up (not timed): a LightGBM champion trained by `churn pipeline run` in a fresh CHURN_HOME, and
N synthetic customers written to Parquet. Then, in one run:

- ours: `churn batch score --input in.parquet --output out.parquet` (the local engine: read,
  validate, transform, predict, write, in Arrow batches), its rows/s as the job reports it and its
  peak RSS as the kernel reports it for that process; once with LightGBM (`batch.compiled=off`)
  and once with compiled trees (`batch.compiled=on`, compiled into a cold cache);
- reference: `Booster.predict` of the same model on the already-built numpy matrix of the same
  rows, on one thread and on all the engine's threads (what scoring would cost with no I/O,
  validation or features); in the same child, each stage alone over all the rows (read, validate,
  transform, compiled predict) and the trees' compile time with no cache;
- one row: the latency of scoring one customer's feature row through LightGBM's single-row C API
  (the API's path) and through the compiled trees;
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
COMPILED_TARGET = 3.0  # compiled local engine rows/s over Booster.predict's, same threads


def main() -> None:
    """Run the benchmark and print a table, then one JSON line."""
    args = _arguments()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="churn-bench-batch-"))
    threads = str(os.cpu_count() or 1)
    env = {
        **os.environ,
        "CHURN_HOME": str(workdir / "churn-home"),
        "CHURN_BATCH__SPARK_MASTER": "local[2]",
        "CHURN_BATCH__NUM_THREADS": threads,
        "CHURN_TRAINING__CANDIDATES": '["lightgbm"]',  # the reference is LightGBM's own predict
    }
    try:
        source = _setup(workdir, env, args.rows)
        ours = _score(source, workdir / "scores.parquet", {**env, "CHURN_BATCH__COMPILED": "off"}, "local")
        shutil.rmtree(workdir / "churn-home" / "cache" / "compiled", ignore_errors=True)  # a cold cache
        fast = _score(
            source, workdir / "scores-compiled.parquet", {**env, "CHURN_BATCH__COMPILED": "on"}, "local"
        )
        fast["max_abs_diff"] = _max_difference(
            workdir / "scores.parquet", workdir / "scores-compiled.parquet"
        )
        reference = _raw_predict(source, env)
        spark = None if args.skip_spark else _score(source, workdir / "scores-spark.parquet", env, "spark")
        _report(args.rows, ours, fast, reference, spark)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-spark", action="store_true")
    parser.add_argument(
        "--workdir",
        help="keep files here instead of a temporary folder; a later run reuses its champion and customers",
    )
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
    source = workdir / "customers.parquet"
    if (workdir / "churn-home").is_dir() and _rows(source) == rows:
        print(f"set-up: the champion and {rows:,} customers of {workdir} reused", file=sys.stderr)
        return source
    started = time.perf_counter()
    _churn("pipeline", "run", env=env)
    trained = time.perf_counter() - started
    started = time.perf_counter()
    _churn("data", "generate", "--rows", str(rows), "--output", str(source), "--seed", "11", env=env)
    print(
        f"set-up: champion trained in {trained:.1f} s, {rows:,} customers generated in "
        f"{time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return source


def _rows(source: Path) -> int | None:
    """The rows of a Parquet file a previous run left, if there is one."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(source).metadata.num_rows if source.is_file() else None


def _score(source: Path, output: Path, env: dict[str, str], engine: str) -> dict[str, Any]:
    summary, peak = _churn(
        "batch", "score", "--input", str(source), "--output", str(output), "--engine", engine, env=env
    )
    return {**summary, "peak_rss_mb": round(peak, 1)}


def _max_difference(lightgbm: Path, compiled: Path) -> float:
    """The largest difference between two runs' probabilities, customer by customer."""
    import polars as pl

    left = pl.read_parquet(lightgbm, columns=["customer_id", "churn_probability"])
    right = pl.read_parquet(compiled, columns=["customer_id", "churn_probability"])
    joined = left.join(right, on="customer_id", how="full", suffix="_compiled")
    if joined.height != left.height or joined.get_column("churn_probability_compiled").null_count():
        raise SystemExit("the compiled run scored other customers than the LightGBM run")
    gap = (pl.col("churn_probability") - pl.col("churn_probability_compiled")).abs().max()
    return float(joined.select(gap).item())


def _raw_predict(source: Path, env: dict[str, str]) -> dict[str, Any]:
    """lightgbm's Booster.predict alone on the prebuilt matrix, in a child so memory is not shared;
    and in the same child each stage alone, the compile time and one-row latencies."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("batch_stages.py")), str(source)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise SystemExit(f"reference failed:\n{result.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def _report(
    rows: int,
    ours: dict[str, Any],
    fast: dict[str, Any],
    reference: dict[str, Any],
    spark: dict[str, Any] | None,
) -> None:
    raw = reference["rows"] / reference["predict_s"]
    ratio = ours["rows_per_s"] / raw
    compiled_ratio = fast["rows_per_s"] / raw
    threads = reference["threads"]
    print(f"{'':50}{'rows':>12}{'seconds':>10}{'rows/s':>14}{'peak RSS MB':>14}")
    for name, run in (
        ("local engine, LightGBM (read+validate+score+write)", ours),
        ("local engine, compiled trees", fast),
    ):
        print(
            f"{name:50}{rows:>12,}{run['seconds']:>10.2f}{run['rows_per_s']:>14,}{run['peak_rss_mb']:>14,.0f}"
        )
    if spark:
        print(
            f"{'spark engine, local[2]':50}{rows:>12,}{spark['seconds']:>10.2f}{spark['rows_per_s']:>14,}"
            f"{spark['peak_rss_mb']:>14,.0f}"
        )
    print("stages alone, on all rows at once (reference child):")
    stages = [
        ("read Parquet", "read_s", 1),
        ("validate", "validate_s", 1),
        ("transform (features)", "transform_s", 1),
        ("Booster.predict, 1 thread", "predict_1_s", 1),
        (f"Booster.predict, {threads} threads", "predict_s", threads),
        ("compiled predict, 1 thread", "compiled_1_s", 1),
        (f"compiled predict, {threads} threads", "compiled_s", threads),
    ]
    for name, key, _ in stages:
        seconds = reference[key]
        print(f"  {name:48}{reference['rows']:>12,}{seconds:>10.3f}{round(reference['rows'] / seconds):>14,}")
    print(
        f"compile: {reference['compile_s']:.2f} s with no cache ({reference['trees']} trees); "
        f"the compiled run took {fast['compile_seconds']} s to compile or load them"
    )
    print(
        f"one row: single-row C API {reference['one_row_lightgbm_us']:.1f} us, "
        f"compiled {reference['one_row_compiled_us']:.1f} us (median of {reference['one_row_calls']:,} calls)"
    )
    print(f"compiled vs LightGBM probabilities, max abs difference over all rows: {fast['max_abs_diff']:.3g}")
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"ratio (local / raw predict rows/s): {ratio:.3f}   target >= {TARGET_RATIO}   {verdict}")
    verdict = "PASS" if compiled_ratio >= COMPILED_TARGET else "FAIL"
    print(
        f"compiled ratio (compiled local / raw predict rows/s, {threads} threads): {compiled_ratio:.3f}   "
        f"target >= {COMPILED_TARGET}   {verdict}"
    )
    print(
        json.dumps(
            {
                "rows": rows,
                "local_rows_per_s": ours["rows_per_s"],
                "local_seconds": ours["seconds"],
                "raw_predict_rows_per_s": round(raw),
                "raw_predict_seconds": round(reference["predict_s"], 3),
                "ratio": round(ratio, 3),
                "target": TARGET_RATIO,
                "passed": ratio >= TARGET_RATIO,
                "spark_rows_per_s": spark["rows_per_s"] if spark else None,
                "peak_rss_mb": ours["peak_rss_mb"],
                "spark_peak_rss_mb": spark["peak_rss_mb"] if spark else None,
                "rows_quarantined": ours["rows_quarantined"],
                "threads": threads,
                "raw_predict_1_thread_rows_per_s": round(reference["rows"] / reference["predict_1_s"]),
                "compiled_rows_per_s": fast["rows_per_s"],
                "compiled_seconds": fast["seconds"],
                "compiled_ratio": round(compiled_ratio, 3),
                "compiled_target": COMPILED_TARGET,
                "compiled_passed": compiled_ratio >= COMPILED_TARGET,
                "compiled_peak_rss_mb": fast["peak_rss_mb"],
                "compiled_scorer": fast["scorer"],
                "compiled_max_abs_diff": fast["max_abs_diff"],
                "compile_s": round(reference["compile_s"], 3),
                "compiled_predict_rows_per_s": round(reference["rows"] / reference["compiled_s"]),
                "one_row_lightgbm_us": round(reference["one_row_lightgbm_us"], 2),
                "one_row_compiled_us": round(reference["one_row_compiled_us"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
