"""The candidates: fitted on the same split, and cross-validated for the card (one lucky split shows)."""

from __future__ import annotations

from typing import Any

import numpy as np

from churn_mlops.models.tracking import Tracker
from churn_mlops.models.training import Candidate, Split, stratified_split, train_linear
from churn_mlops.models.tuning import tune_lightgbm
from churn_mlops.pipeline.training import Prepared, Step, fit
from churn_mlops.settings import TrainingSettings


def fit_candidates(
    prepared: Prepared, config: TrainingSettings, params: dict[str, Any] | None
) -> list[Candidate]:
    """Every configured candidate, fitted on the same training rows and calibrated on validation."""
    fitted: list[Candidate] = []
    for kind in config.candidates:
        if kind == "lightgbm":
            fitted.append(fit(prepared, config, params))
        else:
            categorical = prepared.features.categorical_indices
            fitted.append(train_linear(*prepared.part("train"), *prepared.part("valid"), categorical))
    return fitted


def cross_validate(
    prepared: Prepared, config: TrainingSettings, params: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Each candidate's stratified k-fold ROC AUC over the training and validation rows, with a 95%
    interval (Student's t over the folds), so one lucky split shows as such. The test rows stay
    out; inside each fold a stratified part of the fitting rows stops LightGBM early. The feature
    spec is the one fitted on the training rows."""
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    if config.cv_folds < 2:
        return {}
    rows = np.concatenate([prepared.split.train, prepared.split.valid])
    labels = prepared.labels[rows]
    scores: dict[str, list[float]] = {kind: [] for kind in config.candidates}
    for held in stratified_folds(labels, config.cv_folds, config.seed):
        fitting = np.setdiff1d(np.arange(len(rows)), held)
        inner = stratified_split(labels[fitting], valid=config.valid_fraction, test=0.0, seed=config.seed)
        fold = Prepared(
            prepared.frame,
            prepared.labels,
            Split(rows[fitting[inner.train]], rows[fitting[inner.valid]], rows[held]),
            prepared.features,
            prepared.matrix,
        )
        x_held, y_held = fold.part("test")
        for candidate in fit_candidates(fold, config, params):
            scores[candidate.kind].append(float(roc_auc_score(y_held, candidate.predict_proba(x_held))))
    spread = stats.t.ppf(0.975, config.cv_folds - 1) / np.sqrt(config.cv_folds)
    return {
        kind: {
            "folds": len(values),
            "roc_auc_mean": float(np.mean(values)),
            "roc_auc_low": float(np.mean(values) - spread * np.std(values, ddof=1)),
            "roc_auc_high": float(np.mean(values) + spread * np.std(values, ddof=1)),
            "roc_auc_folds": values,
        }
        for kind, values in scores.items()
    }


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Row positions of `folds` held-out parts, each with the overall churn rate."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(folds)]
    for label in (0, 1):
        shuffled = rng.permutation(np.flatnonzero(labels == label))
        for index, chunk in enumerate(np.array_split(shuffled, folds)):
            parts[index].append(chunk)
    return [np.sort(np.concatenate(chunks)) for chunks in parts]


def tune(
    prepared: Prepared, config: TrainingSettings, trials: int, tracker: Tracker, parent: str, step: Step
) -> dict[str, Any]:
    """Tune LightGBM with Optuna, each trial a child run of `parent`; return the best parameters."""

    def on_trial(number: int, params: dict[str, Any], value: float | None, state: str) -> None:
        step(f"tuning: trial {number + 1}/{trials} {state}" + (f", valid AUC {value:.4f}" if value else ""))
        child = tracker.start(f"trial-{number}", {"state": state}, parent=parent)
        tracker.log(child, params=params, metrics={"valid_roc_auc": value} if value is not None else {})
        tracker.finish(child)

    result = tune_lightgbm(
        (*prepared.part("train"), *prepared.part("valid")),
        categorical=prepared.features.categorical_indices,
        trials=trials,
        seed=config.seed,
        num_threads=config.num_threads,
        on_trial=on_trial,
        max_rounds=config.max_rounds,
    )
    tracker.log(
        parent, metrics={"tuning_best_valid_roc_auc": result.best_value}, tags={"tuned_trials": str(trials)}
    )
    return result.best_params
