"""`churn train`: train, evaluate, register and gate a model on a lake version."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import typer

from churn_mlops.cli.options import (
    JsonOption,
    SeedOption,
    SpecOption,
    TrialsOption,
    TuneOption,
    dataset_spec_from,
)
from churn_mlops.cli.output import err, print_json, status, table
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.settings import Settings, get_settings

DataOption = Annotated[str, typer.Option("--data", help="Lake version to train on (id, prefix or 'latest').")]
FeaturesOption = Annotated[
    Literal["lake", "store"],
    typer.Option(
        "--features",
        help="lake: each customer's newest row of the lake version; store: each label joined with the "
        "features as of its observation time, by the feature store (Feast).",
    ),
]
AsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="With --features store: only labels observed up to this ISO date or date-time (default: all).",
    ),
]


def train_command(
    data: DataOption = "latest",
    spec: SpecOption = None,
    tune: TuneOption = False,
    trials: TrialsOption = 20,
    seed: SeedOption = None,
    features: FeaturesOption = "lake",
    as_of: AsOfOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train LightGBM and a baseline, track the run in MLflow, register it and apply the gate."""
    from churn_mlops.cli.features import moment
    from churn_mlops.data.lake import Lake

    if as_of is not None and features != "store":
        raise typer.BadParameter("--as-of needs --features store", param_hint="--as-of")
    cutoff = moment(as_of, "--as-of")
    dataset_spec = dataset_spec_from(spec)
    settings = with_seed(get_settings(), seed)
    lake = Lake(settings.lake_dir)
    version = lake.get(data, dataset=dataset_spec.name)
    frame, lineage = lake.read(version), None
    if features == "store":
        frame, lineage = point_in_time(frame, version, dataset_spec, settings, cutoff)
    summary = run_training(frame, version, dataset_spec, settings, trials if tune else 0, lineage)
    show_training(summary, as_json)


def point_in_time(
    frame: Any, version: Any, spec: DatasetSpec, settings: Settings, as_of: Any
) -> tuple[Any, dict[str, str]]:
    """The feature store's training set for a lake version: labels with their features as of their time."""
    from churn_mlops.featurestore.config import require_feast

    require_feast()
    from churn_mlops.featurestore.training import training_set

    with status("building the training set (point-in-time join)"):
        built = training_set(settings, spec, version, frame, as_of)
    return built.frame, built.lineage


def with_seed(settings: Settings, seed: int | None) -> Settings:
    """Settings with the training seed replaced when one is given."""
    if seed is None:
        return settings
    return settings.model_copy(update={"training": settings.training.model_copy(update={"seed": seed})})


def run_training(
    frame: Any,
    version: Any,
    spec: DatasetSpec,
    settings: Settings,
    trials: int,
    training_set: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train with a spinner showing the current step; return the outcome's summary."""
    from churn_mlops.pipeline.training import train_and_register

    with status("training") as update:
        outcome = train_and_register(
            frame, version, spec, settings, trials=trials, step=update, training_set=training_set
        )
    return outcome.summary()


def show_training(summary: dict[str, Any], as_json: bool) -> None:
    """Print a training summary as a table, or as JSON."""
    if as_json:
        print_json(summary)
        return
    metrics, other = summary["metrics"], summary["baseline_metrics"]
    kinds = {"lightgbm": "LightGBM", "logistic_regression": "logistic regression"}
    chosen = [kinds.get(c["kind"], c["kind"]) for c in summary.get("candidates", []) if c["selected"]]
    runner_up = [kinds.get(c["kind"], c["kind"]) for c in summary.get("candidates", []) if not c["selected"]]
    versus = f" ({runner_up[0]} {{:.4f}})" if runner_up and other else ""
    rows = [
        ("model version", f"{summary['model']} v{summary['version']}" + (f", {chosen[0]}" if chosen else "")),
        ("data version", summary["data_version"]),
        ("training set", summary.get("training_set") or "lake"),
        ("test ROC AUC", f"{metrics['roc_auc']:.4f}" + versus.format(other.get("roc_auc", 0.0))),
        ("test PR AUC", f"{metrics['pr_auc']:.4f}" + versus.format(other.get("pr_auc", 0.0))),
        ("log loss / Brier", f"{metrics['log_loss']:.4f} / {metrics['brier']:.4f}"),
        ("threshold", f"{summary['threshold']:.4f}"),
        (
            "precision / recall / F1",
            f"{metrics['precision']:.3f} / {metrics['recall']:.3f} / {metrics['f1']:.3f}",
        ),
        ("lift / capture top 10%", f"{metrics['lift_top10']:.2f} / {metrics['capture_top10']:.1%}"),
        ("gate", ("promoted: " if summary["promoted"] else "not promoted: ") + summary["reason"]),
        ("champion", f"v{summary['champion']}" if summary["champion"] else "none"),
    ]
    table("Training", ["", ""], rows)
    err.print(
        f"runs and versions: {mlflow_ui_hint(summary['tracking_uri'])}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def mlflow_ui_hint(tracking_uri: str) -> str:
    """Where to browse the runs: a tracking server's address, or a command that runs as shown."""
    address = urlsplit(tracking_uri)
    if address.scheme in {"http", "https"}:
        return f"the MLflow UI at {address._replace(netloc=address.netloc.rpartition('@')[2]).geturl()}"
    mlflow = Path(sys.executable).with_name("mlflow")
    program = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
    # a database password stays off the screen: the shell fills it in from the setting's variable
    store = '"$CHURN_REGISTRY__TRACKING_URI"' if address.password else shlex.quote(tracking_uri)
    return f"{shlex.join([*program, 'ui', '--backend-store-uri'])} {store}"
