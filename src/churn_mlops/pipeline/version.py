"""A trained model becomes a registered version: its files written, its run logged, registered.

A version is a folder of plain files (see `models/artifacts.py`): the LightGBM model, the fitted
features, calibration and threshold, metrics, the reference profile for monitoring, plots and
the model card, with checksums.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.models.artifacts import write_artifacts
from churn_mlops.models.card import ModelCardInfo, model_card
from churn_mlops.models.catalog import VersionInfo
from churn_mlops.models.plots import save_plots
from churn_mlops.models.profile import reference_profile
from churn_mlops.models.registry import Registry
from churn_mlops.models.tracking import Tracker
from churn_mlops.models.training import Candidate
from churn_mlops.settings import TrainingSettings

if TYPE_CHECKING:
    from churn_mlops.pipeline.training import Evaluation, Prepared


@dataclass(frozen=True)
class Trained:
    """A fitted model with its data, evaluation and lineage: what a version is made of."""

    prepared: Prepared
    model: Candidate
    result: Evaluation
    lineage: dict[str, str]


def register_version(
    registry: Registry,
    tracker: Tracker,
    run_id: str,
    trained: Trained,
    spec: DatasetSpec,
    config: TrainingSettings,
) -> VersionInfo:
    """Write the version's files, log the run's figures and files, register the files as a version."""
    model, result, lineage = trained.model, trained.result, trained.lineage
    with tempfile.TemporaryDirectory(prefix="churn-model-") as tmp:
        directory = Path(tmp) / "model"
        _write_version(directory, trained, spec, config, registry.model_name)
        tracker.log(
            run_id,
            params=model.params | {"best_iteration": model.best_iteration, "model_kind": model.kind},
            metrics=_flat(result),
            tags=lineage | {"model_kind": model.kind, "selected_by": result.selected_by},
        )
        tracker.log_artifacts(run_id, directory, "model")
        tags = {
            **lineage,
            "metrics": json.dumps(_rounded(result.test)),
            "threshold": f"{result.threshold:.6f}",
            "model_kind": model.kind,
        }
        return registry.register(run_id, directory, "model", tags)


def _write_version(
    directory: Path, trained: Trained, spec: DatasetSpec, config: TrainingSettings, name: str
) -> None:
    """The model, features, metadata, metrics, reference profile, plots and card, as plain files."""
    prepared, model, result, lineage = trained.prepared, trained.model, trained.result, trained.lineage
    created = datetime.now(UTC).isoformat(timespec="seconds")
    y_test = prepared.part("test")[1]
    save_plots(y_test, result.test_probabilities, result.threshold, result.importance, directory / "plots")
    train_frame = prepared.frame[prepared.split.train]
    profile = reference_profile(train_frame, result.test_probabilities, prepared.features)
    card = ModelCardInfo(
        model_name=name,
        version=None,
        dataset=lineage["dataset"],
        data_version=lineage["data_version"],
        data_hash=lineage["data_hash"],
        spec_name=spec.name,
        spec_digest=lineage["spec_digest"],
        rows=prepared.split.sizes(),
        metrics=result.test,
        baseline_metrics=result.baseline,
        slices=result.slices,
        threshold=result.threshold,
        threshold_rule=config.threshold_rule,
        params=model.params,
        created_at=created,
        model_kind=model.kind,
        candidates=result.candidates,
        selected_by=result.selected_by,
        training_set=lineage.get("training_set", ""),
    )
    metrics = {
        "test": result.test,
        "valid": result.valid,
        "baseline_test": result.baseline,
        "slices": result.slices,
        "importance": result.importance,
        "model_kind": model.kind,
        "selected_by": result.selected_by,
        "candidates": result.candidates,
    }
    meta = {
        "model_kind": model.kind,
        "calibration": vars(model.calibration),
        "threshold": result.threshold,
        "threshold_rule": config.threshold_rule,
        "feature_names": list(prepared.features.feature_names),
        "best_iteration": model.best_iteration,
        "params": model.params,
        "created_at": created,
        "rows": prepared.split.sizes(),
        **lineage,
    }
    write_artifacts(
        directory,
        model_text=model.model_text(),
        model_kind=model.kind,
        features=prepared.features,
        meta=meta,
        documents={
            "metrics.json": json.dumps(metrics, indent=2, default=str),
            "profile.json": json.dumps(profile),
            "model_card.md": model_card(card),
        },
    )


def _flat(result: Evaluation) -> dict[str, float]:
    parts = {"test": result.test, "valid": result.valid, "baseline_test": result.baseline}
    for candidate in result.candidates:
        parts[f"candidate_{candidate['kind']}_valid"] = candidate["valid"]
    flat = {f"{part}_{name}": value for part, metrics in parts.items() for name, value in metrics.items()}
    return flat | {"threshold": result.threshold}


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 6) for name, value in metrics.items()}
