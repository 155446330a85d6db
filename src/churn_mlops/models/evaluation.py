"""Evaluation of churn probabilities: thresholds, metrics, slices and paired bootstrap comparisons."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from churn_mlops.models.economics import BusinessCosts
from churn_mlops.models.slices import slice_labels

FloatArray = npt.NDArray[np.float64]
ThresholdRule = Literal["f1", "value"]
BootstrapMetric = Literal["roc_auc", "pr_auc", "brier"]
Scorer = Callable[[FloatArray, FloatArray, FloatArray], FloatArray]

_EPS = 1e-15
_CHUNK_CELLS = 4_000_000  # bootstrap weight cells held at once, so memory stays flat on large data


def choose_threshold(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    *,
    rule: ThresholdRule = "f1",
    costs: BusinessCosts = BusinessCosts(),
) -> float:
    """The threshold (positive when prob >= threshold) maximising F1 or business value.

    Candidates are the distinct probabilities plus `nextafter(max prob, inf)`, which contacts nobody
    and scores 0 under both rules; ties go to the highest threshold, so when no candidate has positive
    value the result contacts nobody.
    """
    y, p = _two_classes(y_true, y_prob)
    thresholds, tp, pp = _counts_by_threshold(y, p)
    if rule == "f1":
        scores = 2.0 * tp / (pp + y.sum())
    elif rule == "value":
        scores = costs.net(tp, pp)
    else:
        raise ValueError(f"unknown threshold rule {rule!r}; use 'f1' or 'value'")
    return float(thresholds[np.argmax(scores)])


def binary_metrics(
    y_true: npt.ArrayLike, y_prob: npt.ArrayLike, threshold: float, *, costs: BusinessCosts = BusinessCosts()
) -> dict[str, float]:
    """Ranking, probability and decision metrics of churn probabilities at a threshold."""
    y, p = _two_classes(y_true, y_prob)
    predicted = p >= threshold
    top = y[np.argsort(-p, kind="stable")[: (y.size + 9) // 10]]
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "calibration_error": expected_calibration_error(y, p),
        **_decision_metrics(y, predicted),
        "lift_top10": float(top.mean() / y.mean()),
        "capture_top10": float(top.sum() / y.sum()),
        "positive_rate": float(y.mean()),
        "predicted_positive_rate": float(predicted.mean()),
        "expected_value": costs.value(y, predicted),
        "n": float(y.size),
    }


def calibration_bins(
    y_true: npt.ArrayLike, y_prob: npt.ArrayLike, bins: int = 10
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Mean probability, observed churn rate and row count of each non-empty equal-width bin."""
    y, p = _checked(y_true, y_prob)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    keep = counts > 0
    mean_prob = np.bincount(index, weights=p, minlength=bins)[keep] / counts[keep]
    rate = np.bincount(index, weights=y, minlength=bins)[keep] / counts[keep]
    return mean_prob, rate, counts[keep]


def expected_calibration_error(y_true: npt.ArrayLike, y_prob: npt.ArrayLike, bins: int = 10) -> float:
    """Mean gap between predicted and observed churn rate over equal-width bins, weighted by rows."""
    mean_prob, rate, counts = calibration_bins(y_true, y_prob, bins)
    return float(np.sum(np.abs(rate - mean_prob) * counts) / counts.sum())


def slice_metrics(
    frame: pl.DataFrame,
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    threshold: float,
    slices: Mapping[str, Sequence[float] | None],
) -> list[dict[str, object]]:
    """Metrics per slice: each value of a categorical column (edges None) or each band of a numeric one.

    Rows are ordered by column name, then category or band order; nulls form a last 'missing' slice
    and empty slices are left out.
    """
    y, p = _checked(y_true, y_prob)
    if frame.height != y.size:
        raise ValueError(f"frame has {frame.height} rows but there are {y.size} labels")
    rows: list[dict[str, object]] = []
    for column in sorted(slices):
        if column not in frame.columns:
            raise ValueError(f"slice column {column!r} is not in the frame")
        edges = slices[column]
        series = frame.get_column(column)
        labels, order = slice_labels(series, edges)
        for label in order:
            mask = labels == label
            if mask.any():
                rows.append(_slice_row(column, label, y[mask], p[mask], threshold))
    return rows


def bootstrap_difference(
    y_true: npt.ArrayLike,
    prob_a: npt.ArrayLike,
    prob_b: npt.ArrayLike,
    *,
    metric: BootstrapMetric = "roc_auc",
    resamples: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Paired bootstrap of metric(a) - metric(b): the full-data difference and a percentile interval.

    Resamples holding a single class are skipped; `resamples` in the result counts those used.
    """
    y, a = _two_classes(y_true, prob_a)
    b = _two_classes(y, prob_b)[1]
    if metric not in _SCORERS:
        raise ValueError(f"unknown bootstrap metric {metric!r}; use one of {sorted(_SCORERS)}")
    if resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError("resamples must be >= 1 and confidence in (0, 1)")
    order_a, order_b = np.argsort(a, kind="stable"), np.argsort(b, kind="stable")
    score = _SCORERS[metric]

    def difference(weights: FloatArray) -> FloatArray:
        score_a = score(y[order_a], a[order_a], weights[:, order_a])
        return score_a - score(y[order_b], b[order_b], weights[:, order_b])

    point = float(difference(np.ones((1, y.size)))[0])
    weights = _resample_weights(y.size, resamples, seed)
    diffs = np.concatenate([difference(w[(w @ y > 0) & (w @ (1 - y) > 0)]) for w in weights])
    if diffs.size == 0:
        raise ValueError("every bootstrap resample held a single class")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return {"difference": point, "low": float(low), "high": float(high), "resamples": float(diffs.size)}


def _checked(y_true: npt.ArrayLike, y_prob: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Labels and probabilities as float arrays, refusing shapes or values that make no sense."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"y_true and y_prob must be 1-D and of equal length, got {y.shape} and {p.shape}")
    if y.size == 0:
        raise ValueError("cannot evaluate empty input")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError("y_prob must hold probabilities in [0, 1]")
    return y, p


def _two_classes(y_true: npt.ArrayLike, y_prob: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Checked labels and probabilities, where the labels must hold both classes."""
    y, p = _checked(y_true, y_prob)
    if y.min() == y.max():
        raise ValueError("y_true holds a single class; both churners and non-churners are needed")
    return y, p


def _counts_by_threshold(y: FloatArray, p: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Candidate thresholds, highest first, with true and predicted positives at each."""
    order = np.argsort(-p, kind="stable")
    ranked = p[order]
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    nobody = np.nextafter(ranked[0], np.inf)
    tp = np.cumsum(y[order])[last]
    return np.r_[nobody, ranked[last]], np.r_[0.0, tp], np.r_[0.0, last + 1.0]


def _decision_metrics(y: FloatArray, predicted: npt.NDArray[np.bool_]) -> dict[str, float]:
    """Precision, recall, F1 and accuracy of hard predictions; 0 where a ratio is undefined."""
    tp = float(y[predicted].sum())
    predicted_pos, actual_pos = float(predicted.sum()), float(y.sum())
    return {
        "precision": tp / predicted_pos if predicted_pos else 0.0,
        "recall": tp / actual_pos if actual_pos else 0.0,
        "f1": 2.0 * tp / (predicted_pos + actual_pos) if predicted_pos + actual_pos else 0.0,
        "accuracy": float(np.mean(predicted == (y == 1.0))),
    }


def _slice_row(column: str, label: str, y: FloatArray, p: FloatArray, threshold: float) -> dict[str, object]:
    """One slice's size, churn rate, AUC (None with a single class) and decision metrics."""
    decisions = _decision_metrics(y, p >= threshold)
    return {
        "slice": column,
        "value": label,
        "n": int(y.size),
        "positive_rate": float(y.mean()),
        "roc_auc": float(roc_auc_score(y, p)) if y.min() != y.max() else None,
        **{key: decisions[key] for key in ("precision", "recall", "f1")},
    }


def _resample_weights(n: int, resamples: int, seed: int) -> Iterator[FloatArray]:
    """Bootstrap resamples as row-count weights, a chunk of resamples (one row each) at a time."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        rows = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        yield np.bincount(rows.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def _group_sums(y: FloatArray, p: FloatArray, w: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Weighted positives and negatives per distinct probability (inputs sorted by probability)."""
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    return np.add.reduceat(w * y, starts, axis=1), np.add.reduceat(w * (1.0 - y), starts, axis=1)


def _weighted_auc(y: FloatArray, p: FloatArray, w: FloatArray) -> FloatArray:
    """ROC AUC per weight row as the Mann-Whitney statistic, ties counting one half."""
    pos, neg = _group_sums(y, p, w)
    below = np.cumsum(neg, axis=1) - neg
    auc: FloatArray = np.sum(pos * (below + 0.5 * neg), axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))
    return auc


def _weighted_average_precision(y: FloatArray, p: FloatArray, w: FloatArray) -> FloatArray:
    """Average precision per weight row, stepping through distinct probabilities from the top."""
    pos, neg = _group_sums(y, p, w)
    tp = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1]
    contacted = tp + np.cumsum(neg[:, ::-1], axis=1)[:, ::-1]
    precision = np.divide(tp, contacted, out=np.zeros_like(tp), where=contacted > 0)
    average: FloatArray = np.sum(pos * precision, axis=1) / pos.sum(axis=1)
    return average


def _weighted_brier(y: FloatArray, p: FloatArray, w: FloatArray) -> FloatArray:
    """Brier score per weight row."""
    brier: FloatArray = (w @ (p - y) ** 2) / w.sum(axis=1)
    return brier


_SCORERS: dict[str, Scorer] = {
    "roc_auc": _weighted_auc,
    "pr_auc": _weighted_average_precision,
    "brier": _weighted_brier,
}
