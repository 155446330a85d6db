"""The training job: a lake version in, a registered, evaluated and gated model version out.

split -> fit features -> (tune) -> candidates (LightGBM, logistic regression) -> the best on
validation, with its threshold -> metrics, slices, plots, card and profile on test -> MLflow
run -> registry version -> gate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from churn_mlops.data.lake import LakeVersion
from churn_mlops.data.snapshots import lake_training_rows
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import DataValidationError
from churn_mlops.features import FeatureSpec, fit_features, transform
from churn_mlops.models import evaluation
from churn_mlops.models.catalog import VersionInfo
from churn_mlops.models.economics import BusinessCosts
from churn_mlops.models.gate import Decision
from churn_mlops.models.registry import Registry
from churn_mlops.models.tracking import Tracker, git_commit
from churn_mlops.models.training import (
    Candidate,
    Split,
    TrainedModel,
    check_labels,
    stratified_split,
    train_lightgbm,
)
from churn_mlops.pipeline.promotion import gate_new_version
from churn_mlops.pipeline.version import Trained, register_version
from churn_mlops.settings import Settings, TrainingSettings

Step = Callable[[str], None]


@dataclass(frozen=True)
class Prepared:
    """Labelled rows, their split, the fitted features and the full matrix."""

    frame: pl.DataFrame
    labels: np.ndarray
    split: Split
    features: FeatureSpec
    matrix: np.ndarray

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Matrix rows and labels of the train, valid or test part."""
        rows = getattr(self.split, name)
        return self.matrix[rows], self.labels[rows]


@dataclass
class Evaluation:
    """The threshold and every figure measured on the held-out rows."""

    threshold: float
    test: dict[str, float]
    valid: dict[str, float]
    baseline: dict[str, float]
    slices: list[dict[str, object]]
    test_probabilities: np.ndarray
    importance: dict[str, float] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)  # each one's kind, figures, selected
    selected_by: str = "roc_auc"


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run produced and what the gate decided."""

    version: VersionInfo
    decision: Decision
    evaluation: Evaluation
    run_id: str
    data_version: str
    champion: str | None
    tracking_uri: str
    training_set: str = ""

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "model": self.version.name,
            "version": self.version.version,
            "run_id": self.run_id,
            "data_version": self.data_version,
            "training_set": self.training_set,
            "threshold": self.evaluation.threshold,
            "metrics": self.evaluation.test,
            "baseline_metrics": self.evaluation.baseline,
            "model_kind": self.version.tags.get("model_kind", "lightgbm"),
            "candidates": [_brief(c, self.evaluation.selected_by) for c in self.evaluation.candidates],
            "tracking_uri": self.tracking_uri,
            "promoted": self.decision.promote,
            "reason": self.decision.reason,
            "champion": self.champion,
        }


def _brief(candidate: dict[str, Any], metric: str) -> dict[str, Any]:
    return {
        "kind": candidate["kind"],
        "selected": candidate["selected"],
        f"valid_{metric}": candidate["valid"][metric],
    }


def prepare(frame: pl.DataFrame, spec: DatasetSpec, config: TrainingSettings) -> Prepared:
    """Check the labels, split the rows and fit the features on the training part only."""
    if spec.target.name not in frame.columns:
        raise DataValidationError(f"target column {spec.target.name!r} is missing: cannot train")
    labels = frame.get_column(spec.target.name).to_numpy().astype(np.int64)
    check_labels(labels, min_rows=config.min_rows)
    split = stratified_split(labels, valid=config.valid_fraction, test=config.test_fraction, seed=config.seed)
    features = fit_features(frame[split.train], spec)
    return Prepared(frame, labels, split, features, transform(frame, features))


def fit(prepared: Prepared, config: TrainingSettings, params: dict[str, Any] | None) -> TrainedModel:
    """LightGBM on the training part, early-stopped and calibrated on the validation part."""
    x_train, y_train = prepared.part("train")
    x_valid, y_valid = prepared.part("valid")
    return train_lightgbm(
        x_train,
        y_train,
        x_valid,
        y_valid,
        categorical=prepared.features.categorical_indices,
        params=params,
        seed=config.seed,
        num_threads=config.num_threads,
        max_rounds=config.max_rounds,
        early_stopping=config.early_stopping,
    )


def evaluate(
    prepared: Prepared, candidates: list[Candidate], config: TrainingSettings
) -> tuple[Candidate, Evaluation]:
    """Score every candidate on validation rows, keep the best by `config.select_by`, measure on test.

    Each candidate's threshold is chosen on validation by the threshold rule; the selection
    never looks at the test rows, which stay for the chosen model's figures and the gate.
    """
    costs = BusinessCosts(config.offer_cost, config.saved_value, config.success_rate)
    x_valid, y_valid = prepared.part("valid")
    x_test, y_test = prepared.part("test")
    scored = []
    for candidate in candidates:
        valid_probabilities = candidate.predict_proba(x_valid)
        threshold = evaluation.choose_threshold(
            y_valid, valid_probabilities, rule=config.threshold_rule, costs=costs
        )
        valid = evaluation.binary_metrics(y_valid, valid_probabilities, threshold, costs=costs)
        test = evaluation.binary_metrics(y_test, candidate.predict_proba(x_test), threshold, costs=costs)
        scored.append((candidate, threshold, valid, test))
    chosen, threshold, valid, test = max(
        scored, key=lambda entry: entry[2][config.select_by]
    )  # first wins ties
    probabilities = chosen.predict_proba(x_test)
    test_frame = prepared.frame[prepared.split.test]
    others = [entry for entry in scored if entry[0] is not chosen]
    compared = max(others, key=lambda entry: entry[2][config.select_by])[3] if others else {}
    importance = chosen.importance(prepared.part("train")[0])
    return chosen, Evaluation(
        threshold=threshold,
        test=test,
        valid=valid,
        baseline=compared,  # the runner-up's test figures, beside the chosen model's
        slices=evaluation.slice_metrics(
            test_frame, y_test, probabilities, threshold, _slices(test_frame, config)
        ),
        test_probabilities=probabilities,
        importance={n: float(g) for n, g in zip(prepared.features.feature_names, importance, strict=True)},
        candidates=[
            {
                "kind": candidate.kind,
                "selected": candidate is chosen,
                "threshold": cut,
                "valid": valid_metrics,
                "test": test_metrics,
            }
            for candidate, cut, valid_metrics, test_metrics in scored
        ],
        selected_by=config.select_by,
    )


def train_and_register(
    frame: pl.DataFrame,
    lake_version: LakeVersion,
    spec: DatasetSpec,
    settings: Settings,
    *,
    trials: int = 0,
    step: Step = lambda _: None,
    training_set: Mapping[str, str] | None = None,
) -> TrainingOutcome:
    """Train on a lake version, track the run, register the model and let the gate decide.

    A table with history trains on each customer's newest snapshot, unless `training_set` (its
    lineage, with a `training_set` line) says the frame is a training set built elsewhere.
    """
    config, manifest = settings.training, lake_version.manifest
    if training_set is None:
        frame, training_set = lake_training_rows(frame, spec)
    registry = Registry.from_settings(settings)
    tracker = Tracker(registry.client, settings.registry.experiment, _artifact_root(settings))
    lineage = {
        "data_version": manifest.version,
        "data_hash": manifest.content_hash,
        "dataset": manifest.dataset,
        "spec": spec.name,
        "spec_digest": spec.digest(),
        "git_commit": git_commit(),
        **training_set,
    }
    run_id = tracker.start("train", lineage)
    try:
        from churn_mlops.pipeline.candidates import fit_candidates, tune

        step("splitting and fitting features")
        prepared = prepare(frame, spec, config)
        params = tune(prepared, config, trials, tracker, run_id, step) if trials else None
        step("training the candidates: " + ", ".join(config.candidates))
        candidates = fit_candidates(prepared, config, params)
        step("choosing on validation rows, measuring on test rows")
        model, result = evaluate(prepared, candidates, config)
        if config.cv_folds >= 2:
            step(f"cross-validating the candidates over {config.cv_folds} folds")
            from churn_mlops.pipeline.candidates import cross_validate

            cv = cross_validate(prepared, config, params)
            for entry in result.candidates:
                entry["cv"] = cv.get(entry["kind"])
        step("tracking and registering")
        version = register_version(
            registry, tracker, run_id, Trained(prepared, model, result, lineage), spec, config
        )
    except BaseException:
        tracker.finish(run_id, failed=True)
        raise
    tracker.finish(run_id)
    step("gating the challenger")
    decision = gate_new_version(
        registry,
        version,
        prepared.frame[prepared.split.test],
        prepared.part("test")[1],
        result.test_probabilities,
        settings,
    )
    champion = registry.champion()
    return TrainingOutcome(
        version,
        decision,
        result,
        run_id,
        manifest.version,
        champion.version if champion else None,
        settings.tracking_uri,
        lineage["training_set"],
    )


def _slices(frame: pl.DataFrame, config: TrainingSettings) -> dict[str, list[float] | None]:
    return {name: edges for name, edges in config.slices.items() if name in frame.columns}


def _artifact_root(settings: Settings) -> Path | None:
    return None if settings.registry.tracking_uri else settings.home / "mlartifacts"
