"""Drift monitoring benchmark: our profile-based monitor against Evidently's DataDriftPreset.

Set-up (not timed): `--reference-rows` undrifted synthetic Telco customers become the reference
(`models.profile.reference_profile`, as training writes it, read back with
`Reference.from_profile`); `--rows` customers generated with drift 0.6 are the logged
predictions. No model is trained: each row's probability is a fixed logistic of contract,
tenure, internet service, payment method and monthly charges (the synthetic churn mechanism),
its decision probability >= 0.5. Both sets are written to Parquet once. Then, in one run, each
contender in its own process, which reads the Parquet rows into memory first (not timed):

- ours: `build_profile` over the current rows in slices of `--chunk-rows` (the profiles summed,
  as the monitoring job streams them), then `drift_report` and `quality_report`; `--repeat`
  runs, the best counts. The reference is the profile, not the reference rows;
- ours, as the job: the same rows as logged JSON request bodies (`struct.json_encode` of each
  chunk, not timed), `decode_inputs` chunk by chunk, then the same monitor on the decoded
  columns; shown apart, not in the ratio;
- Evidently: `Report([DataDriftPreset()]).run(current_data=..., reference_data=...)` on pandas
  frames of the 19 feature columns, in `uv run --isolated` with evidently 0.7.23 and pandas < 3
  (Evidently pins pandas < 3); one run, only `run` timed.

`ratio = evidently_s / monitor_s`, target >= 30; peak RSS is the high-water mark each measuring
process reports of itself (VmHWM: interpreter, imports, the rows in memory and the work),
target under 1 GB for ours. If Evidently cannot be installed the script still reports our
figures, with `evidently_s` and `ratio` null and the reason, and exits 0.

    uv run python bench/monitor.py                       # 1,000,000 rows against 200,000
    uv run python bench/monitor.py --rows 100000 --reference-rows 20000
    uv run python bench/monitor.py --skip-evidently
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from churn_mlops.data.spec import DatasetSpec, load_spec
from churn_mlops.monitoring.counting import build_profile
from churn_mlops.monitoring.drift import drift_report, quality_report
from churn_mlops.monitoring.profile import Profile
from churn_mlops.monitoring.reference import Reference
from churn_mlops.settings import DriftSettings

# Set-up (generation, validation, fitting) and the job module (which brings pandas, scikit-learn
# and SQLAlchemy) are imported where used, so the process measuring our monitor loads only the
# monitoring modules it times.

TARGET_RATIO = 30.0
TARGET_RSS_MB = 1024.0
DRIFT = 0.6
DECISION_THRESHOLD = 0.5
EVIDENTLY = ("evidently==0.7.23", "pandas<3")
EVIDENTLY_TIMEOUT_S = 1800
EVIDENTLY_CODE = """
import json, resource, sys, time
from pathlib import Path
import pandas as pd
import evidently
from evidently import Report
from evidently.presets import DataDriftPreset

def peak_rss_mb():
    status = Path("/proc/self/status")
    if not status.exists():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

columns = json.loads(sys.argv[3])
reference = pd.read_parquet(sys.argv[1], columns=columns)
current = pd.read_parquet(sys.argv[2], columns=columns)
loaded = peak_rss_mb()
started = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
seconds = time.perf_counter() - started
peak = peak_rss_mb()
count, drifted = None, []
for metric in snapshot.dict()["metrics"]:
    config, value = metric["config"], metric["value"]
    if config["type"].endswith("DriftedColumnsCount"):
        count = int(value["count"])
    elif config["type"].endswith("ValueDrift"):
        p_value = "p_value" in config["method"]
        if (value < config["threshold"]) if p_value else (value >= config["threshold"]):
            drifted.append(config["column"])
print(json.dumps({"seconds": seconds, "loaded_rss_mb": loaded, "peak_rss_mb": peak,
                  "drifted_count": count, "drifted": drifted, "version": evidently.__version__,
                  "pandas": pd.__version__}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (`--child` and `--workdir` also serve the measuring processes)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="current (drifted) rows")
    parser.add_argument("--reference-rows", type=int, default=200_000, help="reference rows")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="rows profiled at a time")
    parser.add_argument("--repeat", type=int, default=3, help="runs of our monitor; the best counts")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="kept if given; default a removed tempdir")
    parser.add_argument("--child", choices=("monitor", "job"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.rows, args.reference_rows, args.chunk_rows, args.repeat) < 1:
        parser.error("--rows, --reference-rows, --chunk-rows and --repeat must be at least 1")
    return args


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB: VmHWM where /proc has it.

    Not ru_maxrss: on Linux a child's ru_maxrss starts at its parent's peak (exec keeps the
    high-water mark of the image it replaces), so it would count the set-up data of this script.
    """
    status = Path("/proc/self/status")
    if status.exists():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024


def probabilities(frame: pl.DataFrame) -> pl.Series:
    """A fixed logistic of a few features, standing in for a model's churn probability."""
    logit = (
        -2.3
        + 1.5 * (pl.col("contract") == "Month-to-month")
        - 1.2 * (pl.col("contract") == "Two year")
        - 0.035 * pl.col("tenure")
        + 0.9 * (pl.col("internet_service") == "Fiber optic")
        + 0.45 * (pl.col("payment_method") == "Electronic check")
        + 0.008 * (pl.col("monthly_charges") - 65)
    )
    return frame.select(probability=1 / (1 + (-logit).exp())).to_series()


def canonical(rows: int, seed: int, drift: float, spec: DatasetSpec) -> pl.DataFrame:
    """Valid canonical Telco rows with their probabilities and decisions."""
    from churn_mlops.data.synthetic import generate
    from churn_mlops.data.validation import validate

    valid = validate(pl.concat(generate(rows, seed=seed, drift=drift)), spec).valid
    probability = probabilities(valid)
    return valid.with_columns(
        probability=probability, prediction=(probability >= DECISION_THRESHOLD).cast(pl.Int64)
    )


def make_data(workdir: Path, rows: int, reference_rows: int) -> float:
    """Write the reference profile and the Parquet files; return the seconds it took."""
    from churn_mlops.features.spec import fit_features
    from churn_mlops.models.profile import reference_profile

    started = time.perf_counter()
    spec = load_spec()
    reference = canonical(reference_rows, 1, 0.0, spec)
    features = fit_features(reference, spec)
    profile = reference_profile(reference, reference["probability"].to_numpy(), features)
    (workdir / "profile.json").write_text(json.dumps(profile))
    reference.select(feature_names(spec)).write_parquet(workdir / "reference.parquet")
    canonical(rows, 2, DRIFT, spec).write_parquet(workdir / "current.parquet")
    return time.perf_counter() - started


def feature_names(spec: DatasetSpec) -> list[str]:
    """The 19 Telco input columns both monitors compare."""
    return [c.name for c in spec.features]


def load_reference(workdir: Path) -> Reference:
    """The reference as the monitoring job builds it from a version's profile.json."""
    profile = json.loads((workdir / "profile.json").read_text())
    return Reference.from_profile("bench", profile, DECISION_THRESHOLD, {})


def monitor(
    chunks: list[pl.DataFrame], reference: Reference, settings: DriftSettings
) -> tuple[Profile, dict[str, Any], dict[str, Any]]:
    """Profile each chunk, sum the profiles, then drift and quality: what a window costs."""
    profile = Profile.empty(reference)
    for chunk in chunks:
        profile = profile + build_profile(chunk, chunk["probability"], chunk["prediction"], reference)
    return profile, drift_report(profile, reference, settings), quality_report(profile, reference)


def child_monitor(workdir: Path, chunk_rows: int, repeat: int) -> dict[str, Any]:
    """Ours on rows already in memory: `repeat` timed runs, this process's peak RSS."""
    columns = [*feature_names(load_spec()), "probability", "prediction"]
    frame = pl.read_parquet(workdir / "current.parquet", columns=columns)
    reference, settings = load_reference(workdir), DriftSettings()
    loaded = peak_rss_mb()
    seconds = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        profile, drift, _ = monitor(list(frame.iter_slices(chunk_rows)), reference, settings)
        seconds.append(time.perf_counter() - started)
    if profile.rows != frame.height:
        raise RuntimeError(f"profiled {profile.rows} rows, expected {frame.height}")
    return {
        "seconds": seconds,
        "loaded_rss_mb": loaded,
        "peak_rss_mb": peak_rss_mb(),
        "drifted": drift["drifted_features"],
        "features": len(drift["features"]),
        "share": drift["share"],
        "score_psi": drift["score"]["value"],
    }


def child_job(workdir: Path, chunk_rows: int) -> dict[str, Any]:
    """The job's path, a chunk of the log at a time: decode its JSON, then profile; each timed.

    Each chunk's JSON text is encoded from the rows just before it is decoded (not timed), so
    memory holds one chunk of the log at a time, as the job does.
    """
    from churn_mlops.monitoring.job import decode_inputs

    spec = load_spec()
    columns = [spec.id.name, *feature_names(spec)]
    frame = pl.read_parquet(workdir / "current.parquet", columns=[*columns, "probability", "prediction"])
    reference, settings = load_reference(workdir), DriftSettings()
    decode_s = profile_s = json_mb = 0.0
    profile = Profile.empty(reference)
    for rows in frame.iter_slices(chunk_rows):
        log = rows.select(inputs=pl.struct(columns).struct.json_encode()).to_series()
        json_mb += int(log.str.len_bytes().sum()) / 2**20
        gc.collect()
        started = time.perf_counter()
        inputs = decode_inputs(log, spec)
        decoded = time.perf_counter()
        profile = profile + build_profile(inputs, rows["probability"], rows["prediction"], reference)
        decode_s, profile_s = decode_s + decoded - started, profile_s + time.perf_counter() - decoded
    started = time.perf_counter()
    drift_report(profile, reference, settings)
    quality_report(profile, reference)
    profile_s += time.perf_counter() - started
    return {"decode_s": decode_s, "monitor_s": profile_s, "json_mb": json_mb, "peak_rss_mb": peak_rss_mb()}


class MeasurementError(RuntimeError):
    """A measuring process exited with an error; the message is the end of its stderr."""


def run_child(command: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run a measuring process; return the JSON of its last stdout line."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    if result.returncode:
        raise MeasurementError(result.stderr.strip()[-3000:] or f"exit status {result.returncode}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def run_ours(workdir: Path, args: argparse.Namespace, child: str) -> dict[str, Any]:
    """One of our measuring processes: this script again, with `--child`."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", child, "--workdir", str(workdir)]
    command += ["--chunk-rows", str(args.chunk_rows), "--repeat", str(args.repeat)]
    return run_child(command)


def run_evidently(workdir: Path) -> dict[str, Any] | str:
    """Evidently's report in an isolated uv environment; its figures, or why it did not run.

    Without a network, uv falls back to the packages already in its cache (`--offline`).
    """
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        return "Evidently did not run: uv not found on PATH"
    columns = json.dumps(feature_names(load_spec()))
    command = [uv, "run", "--isolated", "--no-project", "--quiet"]
    for requirement in EVIDENTLY:
        command += ["--with", requirement]
    command += ["python", "-c", EVIDENTLY_CODE]
    command += [str(workdir / "reference.parquet"), str(workdir / "current.parquet"), columns]
    reason = ""
    for extra in ([], ["--offline"]):
        try:
            return run_child(command[:2] + extra + command[2:], timeout=EVIDENTLY_TIMEOUT_S)
        except (MeasurementError, OSError) as exc:
            reason = f"Evidently did not run: {(str(exc).splitlines() or [type(exc).__name__])[-1]}"
        except subprocess.TimeoutExpired:
            return f"Evidently did not finish in {EVIDENTLY_TIMEOUT_S} s"
    return reason


def summary(
    args: argparse.Namespace, ours: dict[str, Any], job: dict[str, Any], evidently: dict[str, Any] | str
) -> dict[str, Any]:
    """The machine-readable result."""
    monitor_s = min(ours["seconds"])
    theirs = evidently if isinstance(evidently, dict) else {}
    ratio = theirs["seconds"] / monitor_s if theirs else None
    rss_ok = ours["peak_rss_mb"] < TARGET_RSS_MB
    return {
        "rows": args.rows,
        "reference_rows": args.reference_rows,
        "chunk_rows": args.chunk_rows,
        "features": ours["features"],
        "monitor_s": round(monitor_s, 4),
        "monitor_s_all": [round(s, 4) for s in ours["seconds"]],
        "evidently_s": round(theirs["seconds"], 3) if theirs else None,
        "ratio": round(ratio, 1) if ratio is not None else None,
        "target_ratio": TARGET_RATIO,
        "peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "loaded_rss_mb": round(ours["loaded_rss_mb"], 1),
        "target_rss_mb": TARGET_RSS_MB,
        "evidently_peak_rss_mb": round(theirs["peak_rss_mb"], 1) if theirs else None,
        "evidently_loaded_rss_mb": round(theirs["loaded_rss_mb"], 1) if theirs else None,
        "passed": ratio is not None and ratio >= TARGET_RATIO and rss_ok,
        "rss_passed": rss_ok,
        "decode_s": round(job["decode_s"], 3),
        "job_monitor_s": round(job["monitor_s"], 3),
        "job_json_mb": round(job["json_mb"], 1),
        "job_peak_rss_mb": round(job["peak_rss_mb"], 1),
        "drifted_features": ours["drifted"],
        "drift_share": round(ours["share"], 3),
        "score_psi": round(ours["score_psi"], 4),
        "evidently_drifted_count": theirs.get("drifted_count"),
        "evidently_drifted": theirs.get("drifted"),
        "evidently": theirs.get("version"),
        "evidently_pandas": theirs.get("pandas"),
        "evidently_skipped": evidently if isinstance(evidently, str) else None,
        "polars": pl.__version__,
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def table(result: dict[str, Any]) -> str:
    """A plain-text table of the results, then the verdicts and the drift each side found."""
    rows = f"{result['rows']:>10,}"
    lines = [
        f"{'':58} {'rows':>10} {'seconds':>8} {'peak RSS MiB':>13}",
        f"{'ours: build_profile (chunks) + drift + quality, best':58} {rows} "
        f"{result['monitor_s']:>8.3f} {result['peak_rss_mb']:>13,.0f}",
        f"{'ours, as the job: decode_inputs of the JSON log':58} {rows} "
        f"{result['decode_s']:>8.3f} {result['job_peak_rss_mb']:>13,.0f}",
        f"{'ours, as the job: then profile + drift + quality':58} {rows} {result['job_monitor_s']:>8.3f}",
    ]
    evidently = result["evidently_s"] is not None
    if evidently:
        name = f"Evidently {result['evidently']}: Report([DataDriftPreset()]).run"
        lines.append(
            f"{name:58} {rows} {result['evidently_s']:>8.3f} {result['evidently_peak_rss_mb']:>13,.0f}"
        )
    runs = ", ".join(f"{s:.3f}" for s in result["monitor_s_all"])
    loaded = f"ours {result['loaded_rss_mb']:,.0f} MiB"
    loaded += f", Evidently {result['evidently_loaded_rss_mb']:,.0f} MiB" if evidently else ""
    lines.append(f"ours, all runs s: {runs}; peak RSS once the rows are loaded: {loaded}")
    return "\n".join(lines + verdicts(result))


def verdicts(result: dict[str, Any]) -> list[str]:
    """The two targets, and which features each side found drifted."""
    ratio = result["ratio"]
    if ratio is None:
        ratio_line = f"n/a   target >= {TARGET_RATIO:g}   ({result['evidently_skipped']})"
    else:
        ratio_line = (
            f"{ratio:.1f}   target >= {TARGET_RATIO:g}   {'PASS' if ratio >= TARGET_RATIO else 'FAIL'}"
        )
    rss = f"{result['peak_rss_mb']:,.1f} MiB   target < {TARGET_RSS_MB:g}"
    drifted, features = result["drifted_features"], result["features"]
    lines = [
        f"ratio (Evidently s / ours s): {ratio_line}",
        f"peak RSS (ours): {rss}   {'PASS' if result['rss_passed'] else 'FAIL'}",
        f"drift seen by ours: {len(drifted)} of {features} features ({', '.join(drifted) or 'none'}), "
        f"share {result['drift_share']:.3f}, score PSI {result['score_psi']:.3f}",
    ]
    if result["evidently_drifted"] is not None:
        names = ", ".join(result["evidently_drifted"]) or "none"
        lines.append(
            f"drift seen by Evidently: {result['evidently_drifted_count']} of {features} columns ({names})"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 whatever the figures (they are reported, not enforced)."""
    args = parse_args(argv)
    if args.child:
        if args.workdir is None:
            raise SystemExit("--child needs --workdir")
        measured = (
            child_monitor(args.workdir, args.chunk_rows, args.repeat)
            if args.child == "monitor"
            else child_job(args.workdir, args.chunk_rows)
        )
        print(json.dumps(measured))
        return 0
    own_dir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="churn-bench-monitor-")) if own_dir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        seconds = make_data(workdir, args.rows, args.reference_rows)
        print(
            f"set-up: {args.reference_rows:,} reference rows (profile) and {args.rows:,} current rows "
            f"(drift {DRIFT}) generated, validated, scored and written in {seconds:.1f} s (not timed)"
        )
        ours = run_ours(workdir, args, "monitor")
        job = run_ours(workdir, args, "job")
        evidently = "skipped (--skip-evidently)" if args.skip_evidently else run_evidently(workdir)
        outcome = summary(args, ours, job, evidently)
        print(table(outcome))
        print(json.dumps(outcome))
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
