"""Training benchmark: the whole pipeline on the Telco data, and LightGBM training on 1M synthetic rows.

What it measures
    1. Telco pipeline (target: under 60 s wall). `churn pipeline run --source telco_churn.csv --json`
       is run as a subprocess (the `churn` script of this environment) with CHURN_HOME set to a fresh
       temporary directory, exactly as a user runs it: interpreter start and imports, ingest,
       validate, train (no tuning), evaluate, register in MLflow on SQLite, gate, exit. Reported:
       wall seconds of the best of `--repeat` runs (all are listed) and the test ROC AUC of its JSON.
    2. Where that time goes. A further subprocess (`--part stages`) repeats the same job in-process
       with each stage timed on its own: importing the CLI, importing the training stack (MLflow,
       LightGBM, scikit-learn, matplotlib), initialising the MLflow store on a fresh SQLite file,
       ingest, then each step of `train_and_register`. Interpreter start and exit are not included.
    3. Training at scale (`--part synthetic`, in its own subprocess so its peak RSS is its own):
       `--rows` synthetic customers are generated, validated and prepared (split, feature fit,
       transform; timed as set-up), then `churn_mlops.pipeline.training.fit` (LightGBM with early
       stopping on the validation part, Platt calibration, 2 threads) is timed; rows/s = training
       rows / fit seconds. Reference, alternating with it in the same process: a bare
       `lightgbm.train` on the same training matrix (Dataset construction included, as in ours) with
       the same parameters for exactly our best iteration's number of rounds (no validation set, no
       early stopping, no calibration). ratio = reference seconds / our fit seconds, best run of
       each: how close our wrapper is to bare LightGBM (1.0 = no overhead). Peak RSS is the
       subprocess's high-water mark (resource.getrusage) right after our first fit, before any
       reference run, in MiB.

    Noise: on a shared machine LightGBM's OpenMP threads are very sensitive to other busy processes
    (a 2-thread fit can run 10x slower while another process competes for the 2 cores), so each
    contender runs `--repeat` times and the best run counts; the 1-minute load average at start and
    end and the OMP_WAIT_POLICY in force are recorded with the figures.

Output
    A readable table, then as the last line of stdout one JSON object (telco_pipeline_seconds,
    telco_target_seconds, telco_roc_auc, synthetic_rows, synthetic_train_rows_per_s,
    synthetic_fit_seconds, raw_lightgbm_seconds, ratio, peak_rss_mb, ...) for scripts and CI.

How to run
    uv run python bench/train.py [--rows N] [--repeat K] [--skip-telco] [--skip-synthetic]
                                 [--telco-csv PATH]

    Defaults: 1,000,000 synthetic rows, 2 repeats, the Telco CSV at ../shared/datasets/telco_churn.csv.
    With the defaults it takes several minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from churn_mlops.data.spec import DatasetSpec
    from churn_mlops.models.training import TrainedModel
    from churn_mlops.pipeline.training import Prepared

TELCO_TARGET_SECONDS = 60.0
DEFAULT_TELCO_CSV = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "telco_churn.csv"
SYNTHETIC_SEED = 0
# Step names reported by train_and_register, in order, with the label each stage gets here.
TRAIN_STEPS = {
    "splitting and fitting features": "split + fit features",
    "training LightGBM": "LightGBM fit (early stopping)",
    "evaluating on held-out rows": "evaluate (+ baseline, slices)",
    "tracking and registering": "plots, card, MLflow log + register",
    "gating the challenger": "gate",
}


@dataclass(frozen=True)
class TelcoRun:
    """One end-to-end CLI run on the Telco data."""

    seconds: float
    roc_auc: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows for the training part")
    parser.add_argument("--skip-synthetic", action="store_true", help="skip the synthetic training part")
    parser.add_argument("--skip-telco", action="store_true", help="skip the Telco pipeline part")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each timed contender; best is used")
    parser.add_argument("--telco-csv", type=Path, default=DEFAULT_TELCO_CSV, help="the Telco churn CSV")
    parser.add_argument(
        "--part", choices=("all", "stages", "synthetic"), default="all", help="internal: one part only"
    )
    args = parser.parse_args(argv)
    if args.rows < 1000 or args.repeat < 1:
        parser.error("need --rows >= 1000 and --repeat >= 1")
    return args


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024


def churn_executable() -> str:
    """The `churn` console script of this environment."""
    beside = Path(sys.executable).parent / "churn"
    found = str(beside) if beside.exists() else shutil.which("churn")
    if found is None:
        raise RuntimeError("the `churn` command is not installed; run `uv sync` first")
    return found


def run_checked(command: list[str], env: dict[str, str] | None = None, *, quiet: bool = True) -> str:
    """Run a command, return its stdout; its stderr is kept (and shown on failure) when quiet."""
    stderr = subprocess.PIPE if quiet else None
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, check=False)
    if done.returncode != 0:
        detail = done.stderr[-3000:] if quiet else "see its stderr above"
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {done.returncode}:\n{detail}")
    return done.stdout


def run_telco_cli(csv: Path) -> TelcoRun:
    """`churn pipeline run` on the Telco CSV in a fresh CHURN_HOME, timed end to end."""
    command = [churn_executable(), "pipeline", "run", "--source", str(csv), "--json"]
    with tempfile.TemporaryDirectory(prefix="churn-bench-home-") as home:
        start = time.perf_counter()
        stdout = run_checked(command, env={**os.environ, "CHURN_HOME": home})
        seconds = time.perf_counter() - start
    training = json.loads(stdout)["training"]
    return TelcoRun(seconds, float(training["metrics"]["roc_auc"]))


def run_part(part: str, *extra: str) -> dict[str, Any]:
    """Run one part of this script in a subprocess; return the JSON of its last stdout line."""
    stdout = run_checked([sys.executable, __file__, "--part", part, *extra], quiet=False)
    return json.loads(stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def timed_import(module: str) -> float:
    """Seconds to import a module (and whatever it imports that is not loaded yet)."""
    start = time.perf_counter()
    importlib.import_module(module)
    return time.perf_counter() - start


def stage_timings(csv: Path) -> dict[str, float]:
    """The Telco pipeline in-process, each stage timed; the imports are deferred to be timed here."""
    seconds = {
        "import churn_mlops.cli": timed_import("churn_mlops.cli"),
        "import training stack (mlflow, lightgbm, ...)": timed_import("churn_mlops.pipeline.training"),
    }
    with tempfile.TemporaryDirectory(prefix="churn-bench-home-") as home:
        seconds |= pipeline_stages(csv, Path(home))
    return seconds


def pipeline_stages(csv: Path, home: Path) -> dict[str, float]:
    """Store initialisation, ingest and each training step, as the CLI runs them."""
    from churn_mlops.data.ingest import ingest
    from churn_mlops.data.lake import Lake
    from churn_mlops.data.sources import Source
    from churn_mlops.data.spec import load_spec
    from churn_mlops.models.registry import Registry
    from churn_mlops.models.tracking import Tracker
    from churn_mlops.pipeline.training import train_and_register
    from churn_mlops.settings import Settings

    settings, spec = Settings(home=home), load_spec()
    start = time.perf_counter()
    registry = Registry.from_settings(settings)
    Tracker(registry.client, settings.registry.experiment, settings.home / "mlartifacts")
    seconds = {"MLflow store init (fresh SQLite)": time.perf_counter() - start}
    start = time.perf_counter()
    lake = Lake(settings.lake_dir)
    version = ingest(Source(str(csv)), spec, lake=lake, quarantine_dir=settings.quarantine_dir).version
    assert version is not None
    frame = lake.read(version)
    seconds["ingest + validate + lake read"] = time.perf_counter() - start
    marks: list[tuple[str, float]] = [("MLflow run start", time.perf_counter())]
    train_and_register(frame, version, spec, settings, step=lambda s: marks.append((s, time.perf_counter())))
    marks.append(("end", time.perf_counter()))
    steps = itertools.pairwise(marks)
    return seconds | {TRAIN_STEPS.get(name, name): end - begin for (name, begin), (_, end) in steps}


def synthetic_part(rows: int, repeat: int) -> dict[str, Any]:
    """Generate, validate and prepare `rows` customers; time our fit and a bare LightGBM."""
    import polars as pl

    from churn_mlops.data.spec import load_spec
    from churn_mlops.data.synthetic import generate
    from churn_mlops.data.validation import validate

    spec = load_spec()
    start = time.perf_counter()
    raw = pl.concat(list(generate(rows, seed=SYNTHETIC_SEED)))
    figures: dict[str, Any] = {"generate_seconds": time.perf_counter() - start}
    start = time.perf_counter()
    valid = validate(raw, spec).valid
    figures["validate_seconds"] = time.perf_counter() - start
    del raw
    figures["peak_rss_mb_before_training"] = peak_rss_mb()
    return figures | train_and_compare(valid, spec, repeat)


def train_and_compare(frame: pl.DataFrame, spec: DatasetSpec, repeat: int) -> dict[str, Any]:
    """Prepare, then alternate our fit and the bare-LightGBM reference; score the test part."""
    from sklearn.metrics import roc_auc_score

    from churn_mlops.pipeline.training import fit, prepare
    from churn_mlops.settings import TrainingSettings

    config = TrainingSettings()
    start = time.perf_counter()
    prepared = prepare(frame, spec, config)
    figures: dict[str, Any] = {"prepare_seconds": time.perf_counter() - start}
    ours, reference = [], []
    for i in range(repeat):
        start = time.perf_counter()
        model = fit(prepared, config, params=None)
        ours.append(time.perf_counter() - start)
        figures.setdefault("peak_rss_mb", peak_rss_mb())  # ours alone: before any reference run
        reference.append(raw_lightgbm_seconds(prepared, model))
        print(
            f"  repeat {i + 1}/{repeat}: ours {ours[-1]:.2f} s, reference {reference[-1]:.2f} s",
            file=sys.stderr,
        )
    x_test, y_test = prepared.part("test")
    return figures | {
        "rows_valid": frame.height,
        "train_rows": len(prepared.split.train),
        "features": prepared.matrix.shape[1],
        "num_threads": config.num_threads,
        "fit_seconds_all": ours,
        "raw_lightgbm_seconds_all": reference,
        "best_iteration": model.best_iteration,
        "rounds_trained": len(next(iter(model.history.values()), [])),
        "test_roc_auc": float(roc_auc_score(y_test, model.predict_proba(x_test))),
        "peak_rss_mb_end": peak_rss_mb(),
    }


def raw_lightgbm_seconds(prepared: Prepared, model: TrainedModel) -> float:
    """Bare lightgbm.train on the same training matrix and parameters, for our best iteration's rounds."""
    import lightgbm as lgb

    x_train, y_train = prepared.part("train")
    categorical = list(prepared.features.categorical_indices)
    start = time.perf_counter()
    train = lgb.Dataset(x_train, y_train, categorical_feature=categorical, free_raw_data=False)
    booster = lgb.train(dict(model.params), train, num_boost_round=model.best_iteration)
    seconds = time.perf_counter() - start
    if booster.current_iteration() != model.best_iteration:
        raise RuntimeError("the reference trained a different number of rounds")
    return seconds


def summary(telco: list[TelcoRun], stages: dict[str, float], synthetic: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable result."""
    result: dict[str, Any] = {"telco_target_seconds": TELCO_TARGET_SECONDS}
    if telco:
        best = min(telco, key=lambda run: run.seconds)
        result |= {
            "telco_pipeline_seconds": round(best.seconds, 2),
            "telco_pipeline_seconds_all": [round(run.seconds, 2) for run in telco],
            "telco_passed": best.seconds < TELCO_TARGET_SECONDS,
            "telco_roc_auc": round(best.roc_auc, 4),
            "telco_stage_seconds": {name: round(value, 2) for name, value in stages.items()},
        }
    if synthetic:
        result |= synthetic_summary(synthetic)
    return result | {
        "cpus": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def synthetic_summary(synthetic: dict[str, Any]) -> dict[str, Any]:
    """The synthetic part's figures under their JSON names; best (fastest) run of each contender."""
    ours, reference = min(synthetic["fit_seconds_all"]), min(synthetic["raw_lightgbm_seconds_all"])
    return {
        "synthetic_rows": synthetic["rows"],
        "synthetic_train_rows": synthetic["train_rows"],
        "synthetic_train_rows_per_s": round(synthetic["train_rows"] / ours),
        "synthetic_generate_seconds": round(synthetic["generate_seconds"], 2),
        "synthetic_validate_seconds": round(synthetic["validate_seconds"], 2),
        "synthetic_prepare_seconds": round(synthetic["prepare_seconds"], 2),
        "synthetic_fit_seconds": round(ours, 2),
        "synthetic_fit_seconds_all": [round(value, 2) for value in synthetic["fit_seconds_all"]],
        "synthetic_best_iteration": synthetic["best_iteration"],
        "synthetic_rounds_trained": synthetic["rounds_trained"],
        "synthetic_test_roc_auc": round(synthetic["test_roc_auc"], 4),
        "raw_lightgbm_seconds": round(reference, 2),
        "raw_lightgbm_seconds_all": [round(value, 2) for value in synthetic["raw_lightgbm_seconds_all"]],
        "raw_lightgbm_rows_per_s": round(synthetic["train_rows"] / reference),
        "ratio": round(reference / ours, 3),
        "peak_rss_mb": round(synthetic["peak_rss_mb"], 1),
        "peak_rss_mb_before_training": round(synthetic["peak_rss_mb_before_training"], 1),
        "peak_rss_mb_with_reference": round(synthetic["peak_rss_mb_end"], 1),
        "num_threads": synthetic["num_threads"],
    }


def telco_table(result: dict[str, Any]) -> list[str]:
    """Readable lines for the Telco part."""
    verdict = "PASS" if result["telco_passed"] else "FAIL"
    runs = ", ".join(f"{value:.2f}" for value in result["telco_pipeline_seconds_all"])
    lines = [
        "Telco pipeline: churn pipeline run --source telco_churn.csv --json (fresh CHURN_HOME)",
        f"  wall seconds (best) {result['telco_pipeline_seconds']:>8.2f}   target < "
        f"{TELCO_TARGET_SECONDS:.0f}   {verdict}   (runs: {runs})",
        f"  test ROC AUC {result['telco_roc_auc']:>15.4f}",
        "  where the time goes (same job in-process, separate run, interpreter start excluded):",
    ]
    stages = result["telco_stage_seconds"]
    total = sum(stages.values())
    lines += [f"    {name:46} {value:>7.2f} s {value / total:>6.1%}" for name, value in stages.items()]
    return [*lines, f"    {'total':46} {total:>7.2f} s"]


def synthetic_table(result: dict[str, Any]) -> list[str]:
    """Readable lines for the synthetic part."""
    rows, train = result["synthetic_rows"], result["synthetic_train_rows"]
    contenders = [
        ("ours: fit (early stopping + calibration)", "synthetic_fit_seconds", "synthetic_rounds_trained"),
        ("reference: bare lightgbm.train", "raw_lightgbm_seconds", "synthetic_best_iteration"),
    ]
    rates = {
        "synthetic_fit_seconds": "synthetic_train_rows_per_s",
        "raw_lightgbm_seconds": "raw_lightgbm_rows_per_s",
    }
    lines = [
        f"Synthetic training: {rows:,} rows, {train:,} training rows, {result['num_threads']} LightGBM "
        f"threads, OMP_WAIT_POLICY {result['omp_wait_policy']}",
        f"  set-up (not in rows/s): generate {result['synthetic_generate_seconds']:.2f} s, validate "
        f"{result['synthetic_validate_seconds']:.2f} s, prepare (split + features) "
        f"{result['synthetic_prepare_seconds']:.2f} s",
        f"  {'':42} {'best s':>8} {'rounds':>7} {'train rows/s':>13}  all runs s",
    ]
    for name, key, rounds in contenders:
        runs = ", ".join(f"{value:.2f}" for value in result[f"{key}_all"])
        rate = result[rates[key]]
        lines.append(f"  {name:42} {result[key]:>8.2f} {result[rounds]:>7} {rate:>13,}  {runs}")
    return [
        *lines,
        f"  ratio (reference s / ours s): {result['ratio']:.3f}   best iteration "
        f"{result['synthetic_best_iteration']}, test ROC AUC {result['synthetic_test_roc_auc']:.4f}",
        f"  peak RSS {result['peak_rss_mb']:,.1f} MiB ({result['peak_rss_mb_before_training']:,.1f} MiB "
        f"before prepare, {result['peak_rss_mb_with_reference']:,.1f} MiB after the reference runs)",
    ]


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Both parts, each in its own subprocesses; return the summary."""
    telco: list[TelcoRun] = []
    stages: dict[str, float] = {}
    synthetic: dict[str, Any] = {}
    load_start = os.getloadavg()[0]
    if not args.skip_telco:
        for i in range(args.repeat):
            telco.append(run_telco_cli(args.telco_csv))
            print(f"  Telco pipeline run {i + 1}/{args.repeat}: {telco[-1].seconds:.2f} s", file=sys.stderr)
        print("timing its stages in-process ...", file=sys.stderr)
        stages = run_part("stages", "--telco-csv", str(args.telco_csv))
    if not args.skip_synthetic:
        print(f"training on {args.rows:,} synthetic rows ...", file=sys.stderr)
        extra = ("--rows", str(args.rows), "--repeat", str(args.repeat))
        synthetic = {"rows": args.rows} | run_part("synthetic", *extra)
    loads = {
        "load_average_1m_start": round(load_start, 2),
        "load_average_1m_end": round(os.getloadavg()[0], 2),
    }
    return summary(telco, stages, synthetic) | loads


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 whatever the figures (they are reported, not enforced)."""
    args = parse_args(argv)
    if args.part == "stages":
        print(json.dumps(stage_timings(args.telco_csv)))
        return 0
    if args.part == "synthetic":
        print(json.dumps(synthetic_part(args.rows, args.repeat)))
        return 0
    result = run_all(args)
    lines = (telco_table(result) if "telco_pipeline_seconds" in result else []) + (
        synthetic_table(result) if "synthetic_rows" in result else []
    )
    print("\n".join(lines))
    print(
        f"machine: {result['cpus']} CPUs, 1-min load average {result['load_average_1m_start']} at start, "
        f"{result['load_average_1m_end']} at end"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
