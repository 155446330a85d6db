"""Scoring one batch: validate raw rows, score the valid ones, quarantine the rest.

The same function runs in the local engine and inside each Spark partition, with the same
Predictor the API uses, so the three paths give the same probabilities (to 1e-9 where the batch
scores on compiled trees, which sum the same trees in another order).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import lru_cache

import numpy as np
import polars as pl

from churn_mlops.data.normalize import ROW
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.validation import validate
from churn_mlops.features import transform
from churn_mlops.features.spec import FeatureSpec
from churn_mlops.models.artifacts import RISK_LEVELS, Predictor, risk_levels
from churn_mlops.models.compiled import scorer_name
from churn_mlops.monitoring.counting import Encoded, build_profile
from churn_mlops.monitoring.profile import Profile, Slices
from churn_mlops.monitoring.reference import Reference

SCORE_COLUMNS = (
    "customer_id",
    "churn_probability",
    "prediction",
    "risk",
    "model_version",
    "scored_at",
    "run_date",
    "revenue_at_risk",
)


@dataclass(frozen=True)
class ScoringContext:
    """What every batch of one run shares."""

    predictor: Predictor
    spec: DatasetSpec
    model_version: str
    run_date: date
    scored_at: datetime
    horizon_months: float
    value_column: str | None
    reference: Reference | None = None  # profile the scored rows against it, for monitoring
    slices: Slices | None = None  # and per slice
    leaders: int = 0  # keep this many rows of most revenue at risk, features and all (for reasons)


@dataclass(frozen=True)
class ScoredBatch:
    """Scores of the valid rows, and the quarantined rows with global row numbers."""

    scores: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    profile: Profile | None = None
    leaders: pl.DataFrame | None = None  # the batch's rows of most revenue at risk, with their features
    scorer: str | None = None  # what scored it: compiled, lightgbm or logistic_regression


@dataclass(frozen=True)
class CheckedBatch:
    """One raw batch validated: its valid canonical rows, their feature matrix, and its quarantined
    rows, numbered."""

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    matrix: np.ndarray | None = None  # None where no row is valid


def score_batch(raw: pl.DataFrame, context: ScoringContext, *, first_row: int = 1) -> ScoredBatch:
    """Validate, score and quarantine one raw batch whose first row is source row `first_row`."""
    return score_checked(check_batch(raw, context, first_row=first_row), context)


def check_batch(raw: pl.DataFrame, context: ScoringContext, *, first_row: int = 1) -> CheckedBatch:
    """Validate one raw batch whose first row is source row `first_row`, and build its feature
    matrix (the first half of `score_batch`)."""
    return with_matrix(validate_batch(raw, context, first_row=first_row), context)


def validate_batch(raw: pl.DataFrame, context: ScoringContext, *, first_row: int = 1) -> CheckedBatch:
    """Validate one raw batch whose first row is source row `first_row`; no matrix yet."""
    if raw.height == 0:
        return CheckedBatch(pl.DataFrame(), pl.DataFrame(), 0)
    unlabelled = raw.drop(context.spec.target.source_names, strict=False)
    result = validate(unlabelled, _per_batch(context.spec), require_target=False)
    quarantine = result.quarantine.with_columns(pl.col(ROW) + (first_row - 1))
    return CheckedBatch(result.valid, quarantine, raw.height)


def with_matrix(checked: CheckedBatch, context: ScoringContext) -> CheckedBatch:
    """The checked batch with the feature matrix of its valid rows (None where there are none)."""
    if checked.matrix is not None or checked.valid.height == 0:
        return checked
    return replace(checked, matrix=transform(checked.valid, context.predictor.features))


def score_checked(checked: CheckedBatch, context: ScoringContext) -> ScoredBatch:
    """Score the valid rows of a checked batch and profile them (the second half of `score_batch`)."""
    return finish_batch(checked, *predict_checked(checked, context), context)


def predict_checked(checked: CheckedBatch, context: ScoringContext) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and 0/1 decisions of a checked batch's valid rows, as `Predictor.predict` gives them."""
    if checked.matrix is None:
        return np.empty(0), np.empty(0, dtype=np.int8)
    return context.predictor.predict_matrix(checked.matrix)


def finish_batch(
    checked: CheckedBatch, probabilities: np.ndarray, decisions: np.ndarray, context: ScoringContext
) -> ScoredBatch:
    """The scored batch of a checked batch's predictions: output columns, profile and leaders."""
    if checked.rows_in == 0:
        return ScoredBatch(empty_scores(), pl.DataFrame(), 0)
    valid = checked.valid
    scores = _score_frame(valid, probabilities, decisions, context)
    profile = None
    if context.reference is not None:
        encoded = _encoded(checked.matrix, context.predictor.features)
        profile = build_profile(valid, probabilities, decisions, context.reference, context.slices, encoded)
    leaders = _leaders(valid, scores, context.leaders)
    return ScoredBatch(
        scores, checked.quarantine, checked.rows_in, profile, leaders, scorer_name(context.predictor)
    )


def _encoded(matrix: np.ndarray | None, features: FeatureSpec) -> Encoded | None:
    """The matrix's input columns, for the profile: numbers and category codes it need not work out again."""
    if matrix is None:
        return None
    values = {name: matrix[:, index] for index, name in enumerate(features.input_columns)}
    return Encoded(values, {c.name: c.vocabulary for c in features.categorical})


def _leaders(valid: pl.DataFrame, scores: pl.DataFrame, count: int) -> pl.DataFrame | None:
    """The rows of most revenue at risk, features and all: ranked on the scores, then gathered."""
    if not count or scores.height == 0:
        return None
    ranked = scores.select("churn_probability", "revenue_at_risk", "risk").with_row_index("_leader")
    top = ranked.top_k(count, by=["revenue_at_risk", "churn_probability"])
    rows = top.get_column("_leader")
    return pl.concat([valid[rows], top.drop("_leader")], how="horizontal")


@lru_cache(maxsize=8)
def _per_batch(spec: DatasetSpec) -> DatasetSpec:
    """The spec for one batch: bad-row share and row counts are judged over the whole run."""
    return spec.model_copy(update={"max_quarantine_fraction": 1.0, "min_rows": 0})


def _score_frame(
    valid: pl.DataFrame, probabilities: np.ndarray, decisions: np.ndarray, context: ScoringContext
) -> pl.DataFrame:
    """The output columns for validated, canonical rows and their predictions."""
    threshold = context.predictor.threshold
    value = _monthly_value(valid, context.value_column)
    return pl.DataFrame(
        {
            "customer_id": valid.get_column(context.spec.id.name),
            "churn_probability": probabilities,
            "prediction": decisions.astype(np.int8),
            "risk": _risk(probabilities, threshold),
            "model_version": pl.repeat(context.model_version, valid.height, eager=True),
            "scored_at": pl.repeat(context.scored_at, valid.height, eager=True),
            "run_date": pl.repeat(context.run_date, valid.height, eager=True),
            "revenue_at_risk": probabilities * value * context.horizon_months,
        }
    )


def _risk(probabilities: np.ndarray, threshold: float) -> pl.Series:
    """`risk_bands` as a column, from each row's level (cheaper than building a million strings)."""
    return pl.Series(RISK_LEVELS).gather(risk_levels(probabilities, threshold))


def empty_scores() -> pl.DataFrame:
    """A frame with the output schema and no rows."""
    return pl.DataFrame(
        schema={
            "customer_id": pl.String,
            "churn_probability": pl.Float64,
            "prediction": pl.Int8,
            "risk": pl.String,
            "model_version": pl.String,
            "scored_at": pl.Datetime("us", "UTC"),
            "run_date": pl.Date,
            "revenue_at_risk": pl.Float64,
        }
    )


def _monthly_value(valid: pl.DataFrame, column: str | None) -> np.ndarray:
    if column is None or column not in valid.columns:
        return np.full(valid.height, np.nan)
    return valid.get_column(column).cast(pl.Float64).fill_null(0.0).to_numpy()
