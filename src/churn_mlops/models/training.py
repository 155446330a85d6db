"""Model fitting: a stratified split, LightGBM with early stopping and Platt calibration, a baseline.

Pure functions of matrices and parameters; deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression

from churn_mlops.errors import DataValidationError
from churn_mlops.models.calibration import Calibration
from churn_mlops.models.linear import LinearModel

DEFAULT_PARAMS: dict[str, Any] = {  # small, regularised trees: churn tables are small and noisy
    "learning_rate": 0.02,
    "num_leaves": 7,
    "min_data_in_leaf": 30,
    "feature_fraction": 0.7,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 5.0,
    "max_cat_to_onehot": 8,
}
FIXED_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "metric": ["binary_logloss", "auc"],  # early stopping watches the first, the smoother one
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}


@dataclass(frozen=True)
class Split:
    """Row indices of the train, validation and test parts."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        """Rows in each part."""
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


@dataclass
class TrainedModel:
    """A fitted booster, its calibration and how it was trained."""

    booster: lgb.Booster
    calibration: Calibration
    params: dict[str, Any]
    best_iteration: int
    history: dict[str, list[float]] = field(default_factory=dict)
    kind = "lightgbm"

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated churn probabilities for a feature matrix."""
        return self.calibration.apply(np.asarray(self.booster.predict(matrix, raw_score=True)))

    def model_text(self) -> str:
        """The model as it is stored: LightGBM's text format."""
        return str(self.booster.model_to_string())

    def importance(self, matrix: np.ndarray) -> np.ndarray:
        """Each feature's total gain in the trees (`matrix` is not needed for trees)."""
        return np.asarray(self.booster.feature_importance(importance_type="gain"), dtype=np.float64)


@dataclass
class LinearCandidate:
    """The logistic regression as a candidate: its numbers, and a calibration fitted like LightGBM's."""

    linear: LinearModel
    calibration: Calibration
    params: dict[str, Any]
    best_iteration: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    kind = "logistic_regression"

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated churn probabilities for a feature matrix."""
        return self.calibration.apply(self.linear.raw_score(matrix))

    def model_text(self) -> str:
        """The model as it is stored: its numbers as JSON."""
        return self.linear.to_json()

    def importance(self, matrix: np.ndarray) -> np.ndarray:
        """Each feature's mean absolute contribution to the log-odds over `matrix`'s rows."""
        return np.asarray(np.abs(self.linear.contributions(matrix)[:, :-1]).mean(axis=0))


Candidate = TrainedModel | LinearCandidate


def train_linear(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    categorical: tuple[int, ...],
) -> LinearCandidate:
    """The logistic-regression candidate, Platt-calibrated on the validation rows as LightGBM is."""
    linear = train_baseline(x_train, y_train, categorical).to_linear(x_train.shape[1])
    calibration = fit_calibration(linear.raw_score(x_valid), y_valid)
    return LinearCandidate(
        linear, calibration, {"C": 1.0, "max_iter": 2000, "encoding": "one-hot, standardised"}
    )


def stratified_split(labels: np.ndarray, *, valid: float, test: float, seed: int) -> Split:
    """Split row indices so each part has the overall churn rate; the same seed, the same split."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    for label in (False, True):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_test, n_valid = round(len(rows) * test), round(len(rows) * valid)
        parts["test"].append(rows[:n_test])
        parts["valid"].append(rows[n_test : n_test + n_valid])
        parts["train"].append(rows[n_test + n_valid :])
    return Split(**{name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()})


def check_labels(labels: np.ndarray, *, min_rows: int, min_per_class: int = 10) -> None:
    """Refuse data that cannot train a churn model: too few rows or too few of either class."""
    if len(labels) < min_rows:
        raise DataValidationError(f"only {len(labels)} rows; training needs at least {min_rows}")
    positives = int(labels.sum())
    if min(positives, len(labels) - positives) < min_per_class:
        raise DataValidationError(
            f"{positives} churned and {len(labels) - positives} retained customers: "
            f"training needs at least {min_per_class} of each class"
        )


def train_lightgbm(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    categorical: tuple[int, ...],
    params: dict[str, Any] | None = None,
    seed: int = 0,
    num_threads: int = 2,
    max_rounds: int = 2000,
    early_stopping: int = 100,
    callbacks: list[Any] | None = None,
) -> TrainedModel:
    """Fit LightGBM with early stopping on the validation rows, then calibrate on them."""
    merged = {**DEFAULT_PARAMS, **(params or {}), **FIXED_PARAMS, "seed": seed, "num_threads": num_threads}
    train = lgb.Dataset(x_train, y_train, categorical_feature=list(categorical), free_raw_data=False)
    valid = lgb.Dataset(x_valid, y_valid, reference=train)
    history: dict[str, Any] = {}
    booster = lgb.train(
        merged,
        train,
        num_boost_round=max_rounds,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[
            lgb.early_stopping(early_stopping, first_metric_only=True, verbose=False),
            lgb.record_evaluation(history),
            *(callbacks or []),
        ],
    )
    best = booster.best_iteration or booster.current_iteration()
    booster = booster.model_from_string(booster.model_to_string(num_iteration=best))
    calibration = fit_calibration(np.asarray(booster.predict(x_valid, raw_score=True)), y_valid)
    curves = {f"valid_{metric}": list(values) for metric, values in history["valid"].items()}
    return TrainedModel(booster, calibration, merged, best, curves)


def fit_calibration(raw_score: np.ndarray, labels: np.ndarray) -> Calibration:
    """Platt scaling fitted on held-out raw scores."""
    model = LogisticRegression(C=1e6, max_iter=1000).fit(raw_score.reshape(-1, 1), labels)
    return Calibration(slope=float(model.coef_[0, 0]), intercept=float(model.intercept_[0]))


def train_baseline(x_train: np.ndarray, y_train: np.ndarray, categorical: tuple[int, ...]) -> Baseline:
    """A logistic regression on one-hot categories and standardised numbers, for comparison."""
    return Baseline(categorical).fit(x_train, y_train)


class Baseline:
    """Logistic regression on the shared feature matrix; kept in training, never served."""

    def __init__(self, categorical: tuple[int, ...]) -> None:
        self.categorical = categorical

    def fit(self, matrix: np.ndarray, labels: np.ndarray) -> Baseline:
        """Learn the encoding on training rows and fit the regression."""
        self.levels_ = {i: np.unique(matrix[:, i][~np.isnan(matrix[:, i])]) for i in self.categorical}
        numeric = [i for i in range(matrix.shape[1]) if i not in self.levels_]
        self.numeric_ = numeric
        self.mean_ = np.nanmean(matrix[:, numeric], axis=0)
        self.scale_ = np.nanstd(matrix[:, numeric], axis=0) + 1e-9
        self.model_ = LogisticRegression(max_iter=2000, C=1.0).fit(self._encode(matrix), labels)
        return self

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """Churn probabilities."""
        return np.asarray(self.model_.predict_proba(self._encode(matrix))[:, 1])

    def to_linear(self, num_feature: int) -> LinearModel:
        """The fitted model as plain numbers, for serving without a pickle."""
        return LinearModel(
            num_feature=num_feature,
            numeric=tuple(self.numeric_),
            mean=tuple(float(v) for v in self.mean_),
            scale=tuple(float(v) for v in self.scale_),
            levels=tuple((i, tuple(float(v) for v in levels)) for i, levels in self.levels_.items()),
            coef=tuple(float(v) for v in self.model_.coef_[0]),
            intercept=float(self.model_.intercept_[0]),
        )

    def _encode(self, matrix: np.ndarray) -> np.ndarray:
        numeric = np.nan_to_num((matrix[:, self.numeric_] - self.mean_) / self.scale_)
        onehots = [matrix[:, [i]] == levels for i, levels in self.levels_.items()]
        return np.hstack([numeric, *onehots]).astype(np.float64)
