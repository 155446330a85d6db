"""Realised performance from delayed labels, and estimated performance where labels are missing.

Both work on score histograms split by class: realised ones count the labelled predictions,
estimated ones (NannyML's CBPE) split each score bin by its calibrated probability, so a bin of
n predictions at score p holds n*p expected churners. The same metric code then serves both,
and the estimate reads only the profile. Scores are binned to 1/SCORE_BINS, so the ROC AUC is
that of scores rounded to three decimals (within about 1e-3 of the exact one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from churn_mlops.models.economics import BusinessCosts
from churn_mlops.monitoring.profile import Profile, ScoreCounts
from churn_mlops.monitoring.reference import SCORE_BINS

FloatArray = npt.NDArray[np.float64]
CALIBRATION_BINS = 10
CENTRES = (np.arange(SCORE_BINS) + 0.5) / SCORE_BINS


@dataclass
class ClassCounts:
    """Score histograms of churners and stayers, and the confusion matrix at the served decisions."""

    positives: FloatArray
    negatives: FloatArray
    tp: float = 0.0
    fp: float = 0.0
    tn: float = 0.0
    fn: float = 0.0

    @classmethod
    def empty(cls) -> ClassCounts:
        """No predictions."""
        return cls(np.zeros(SCORE_BINS), np.zeros(SCORE_BINS))

    def add(self, probabilities: npt.ArrayLike, decisions: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        """Count labelled predictions in."""
        p = np.asarray(probabilities, dtype=np.float64)
        d = np.asarray(decisions, dtype=bool)
        y = np.asarray(labels, dtype=bool)
        fine = np.minimum((p * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
        self.positives += np.bincount(fine[y], minlength=SCORE_BINS)
        self.negatives += np.bincount(fine[~y], minlength=SCORE_BINS)
        self.tp += float(np.count_nonzero(d & y))
        self.fp += float(np.count_nonzero(d & ~y))
        self.tn += float(np.count_nonzero(~d & ~y))
        self.fn += float(np.count_nonzero(~d & y))

    @property
    def total(self) -> float:
        """Predictions counted."""
        return float(self.positives.sum() + self.negatives.sum())


def expected_counts(profile: Profile | ScoreCounts) -> ClassCounts:
    """What the labels should look like if the calibrated probabilities are right (CBPE)."""
    scores = profile.scores.astype(np.float64)
    rows = profile.decisions.astype(np.float64)
    expected_positive = profile.decided_sum  # by decision: the expected churners among them
    return ClassCounts(
        positives=scores * CENTRES,
        negatives=scores * (1 - CENTRES),
        tp=float(expected_positive[1]),
        fp=float(rows[1] - expected_positive[1]),
        tn=float(rows[0] - expected_positive[0]),
        fn=float(expected_positive[0]),
    )


def realised_counts(batches: Iterable[tuple[FloatArray, FloatArray, FloatArray]]) -> ClassCounts:
    """Class counts of (probabilities, decisions, labels) batches."""
    counts = ClassCounts.empty()
    for probabilities, decisions, labels in batches:
        counts.add(probabilities, decisions, labels)
    return counts


def add_by_slice(
    counts: dict[str, ClassCounts],
    keys: Sequence[str | None],
    probabilities: FloatArray,
    decisions: FloatArray,
    labels: FloatArray,
) -> None:
    """Count labelled predictions into their slices; `keys` holds each row's slice keys as JSON
    ({"keys": ["contract=One year", ...]}, or None for a row without slices)."""
    decoded = pl.Series("keys", keys, dtype=pl.String).str.json_decode(
        pl.Struct({"keys": pl.List(pl.String)})
    )
    rows = pl.DataFrame({"key": decoded.struct.field("keys")}).with_row_index("row").explode("key")
    for (key,), group in rows.drop_nulls("key").group_by("key"):
        index = group.get_column("row").to_numpy()
        slice_counts = counts.setdefault(str(key), ClassCounts.empty())
        slice_counts.add(probabilities[index], decisions[index], labels[index])


def metrics(counts: ClassCounts, costs: BusinessCosts) -> dict[str, Any] | None:
    """ROC AUC, PR AUC, precision, recall, calibration error, expected value; None without rows.

    The AUCs are None unless both classes are present.
    """
    total = counts.total
    if total <= 0:
        return None
    positives, negatives = counts.positives.sum(), counts.negatives.sum()
    both = positives > 0 and negatives > 0
    contacted = counts.tp + counts.fp
    return {
        "rows": round(total, 3),
        "positive_rate": float(positives / total),
        "roc_auc": _roc_auc(counts) if both else None,
        "pr_auc": _average_precision(counts) if both else None,
        "precision": counts.tp / contacted if contacted > 0 else None,
        "recall": counts.tp / (counts.tp + counts.fn) if counts.tp + counts.fn > 0 else None,
        "calibration_error": _calibration_error(counts),
        "expected_value": float(costs.net(counts.tp, contacted)),
    }


def _roc_auc(counts: ClassCounts) -> float:
    """Probability that a churner outscores a stayer, ties counted half, from the histograms."""
    positives, negatives = counts.positives[::-1], counts.negatives[::-1]
    above = np.cumsum(positives) - positives  # churners in strictly higher bins
    pairs = np.sum(negatives * (above + positives / 2))
    return float(pairs / (positives.sum() * negatives.sum()))


def _average_precision(counts: ClassCounts) -> float:
    """Precision at each score cut, weighted by the recall it adds (scikit-learn's definition)."""
    positives, negatives = counts.positives[::-1], counts.negatives[::-1]
    true_positives = np.cumsum(positives)
    predicted = true_positives + np.cumsum(negatives)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(predicted), where=predicted > 0)
    return float(np.sum(precision * positives) / positives.sum())


def _calibration_error(counts: ClassCounts) -> float:
    """Expected calibration error over ten equal-width score bins."""
    rows = counts.positives + counts.negatives
    group = np.arange(SCORE_BINS) * CALIBRATION_BINS // SCORE_BINS
    sizes = np.bincount(group, weights=rows, minlength=CALIBRATION_BINS)
    churners = np.bincount(group, weights=counts.positives, minlength=CALIBRATION_BINS)
    predicted = np.bincount(group, weights=rows * CENTRES, minlength=CALIBRATION_BINS)
    filled = sizes > 0
    gaps = np.abs(churners[filled] - predicted[filled])
    return float(gaps.sum() / sizes.sum())
