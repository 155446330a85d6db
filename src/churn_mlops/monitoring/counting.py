"""Building profiles: a set of predictions counted in the reference's bins and categories.

The counts come from the canonical input columns, or, where the caller has them, from the same
rows already encoded as numbers (the feature matrix's columns): the same counts with less work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl

from churn_mlops.models.slices import MISSING, slice_labels
from churn_mlops.monitoring.profile import (
    MAX_UNKNOWN_VALUES,
    FeatureCounts,
    FloatArray,
    IntArray,
    Profile,
    ScoreCounts,
    Slices,
    fine_bins,
)
from churn_mlops.monitoring.reference import SCORE_BINS, NumericReference, Reference


@dataclass(frozen=True)
class Encoded:
    """Columns of a frame already turned into numbers, as the feature matrix holds them.

    `values` holds a float64 array per column: a numeric column's values (any number where the
    frame's value is null), or a categorical column's codes in its `vocabularies` entry (NaN for
    null or unknown). The profile counts these arrays where they say all the column says, and
    reads the frame's column where they do not (an unknown category, a NaN).
    """

    values: Mapping[str, FloatArray]
    vocabularies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def build_profile(
    frame: pl.DataFrame,
    probabilities: npt.ArrayLike,
    decisions: npt.ArrayLike,
    reference: Reference,
    slices: Slices | None = None,
    encoded: Encoded | None = None,
) -> Profile:
    """The profile of predictions: canonical input columns, their probabilities and decisions.

    `encoded` (the same rows as numbers, e.g. the feature matrix's columns) gives the same counts
    with less work.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    d = np.asarray(decisions, dtype=np.int64)
    scored = ScoreCounts.of(p, d)
    known = encoded or Encoded({})
    features = {
        name: _numeric(_column(frame, name), ref, known.values.get(name))
        for name, ref in reference.numeric.items()
    }
    features |= {
        name: _categorical(_column(frame, name), ref.categories, _codes(known, name))
        for name, ref in reference.categorical.items()
    }
    return Profile(
        frame.height,
        features,
        scored.scores,
        scored.decisions,
        scored.decided_sum,
        _slices(frame, p, d, slices, known),
    )


def slice_keys(frame: pl.DataFrame, slices: Slices) -> dict[str, npt.NDArray[np.object_]]:
    """For each slice column in the frame, each row's key ("contract=One year", "tenure=12-24")."""
    keys = {}
    for column, edges in slices.items():
        if column in frame.columns:
            labels, _ = slice_labels(frame.get_column(column), edges)
            keys[column] = np.char.add(f"{column}=", labels.astype(str)).astype(object)
    return keys


def _slices(
    frame: pl.DataFrame, p: FloatArray, d: IntArray, slices: Slices | None, known: Encoded
) -> dict[str, ScoreCounts]:
    """Score counts of each slice present ("contract=One year"): labels are worked out for the
    column's distinct values only, and every slice is counted in one pass over each row's code."""
    counts: dict[str, ScoreCounts] = {}
    for column, edges in (slices or {}).items():
        if column in frame.columns:
            series = frame.get_column(column)
            coded = _encoded_slice_codes(series, edges, known)
            codes, order = coded or _slice_codes(series, edges)
            counts |= _by_code(codes, [f"{column}={label}" for label in order], p, d)
    return {key: c for key, c in counts.items() if c.scores.any()}


def _encoded_slice_codes(
    series: pl.Series, edges: Sequence[float] | None, known: Encoded
) -> tuple[IntArray, list[str]] | None:
    """`_slice_codes` from the encoded column, or None where it cannot tell (a label the order
    may repeat, an unknown category, NaN)."""
    values = known.values.get(str(series.name))
    if values is None or (series.dtype.is_float() and bool(series.is_nan().any())):
        return None
    nulls = series.is_null().to_numpy() if series.null_count() else None
    if edges is None:
        vocabulary = known.vocabularies.get(str(series.name))
        if vocabulary is None or MISSING in vocabulary or not _all_known(values, series):
            return None
        order = sorted(vocabulary)  # as slice_labels orders categories: sorted, then missing
        position = np.asarray([order.index(v) for v in vocabulary] + [len(order)], dtype=np.int64)
        return position[np.where(np.isnan(values), len(vocabulary), values).astype(np.int64)], [
            *order,
            MISSING,
        ]
    _, order = slice_labels(series.clear(), edges)
    bands = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right").astype(np.int64)
    return (bands if nulls is None else np.where(nulls, len(order) - 1, bands)), order


def _slice_codes(series: pl.Series, edges: Sequence[float] | None) -> tuple[IntArray, list[str]]:
    """Each row's position in the slice labels (`slice_labels`' order, each label once), and the labels."""
    distinct = series.unique()
    labels, order = slice_labels(distinct, edges)
    code_of = {label: code for code, label in enumerate(dict.fromkeys(order))}
    codes, present = pl.Series([code_of[label] for label in labels], dtype=pl.Int64), distinct.is_not_null()
    null_code = codes.filter(~present).first() if distinct.has_nulls() else 0
    mapped = series.replace_strict(distinct.filter(present), codes.filter(present), default=None)
    return mapped.fill_null(null_code).to_numpy(), list(code_of)


def _by_code(codes: IntArray, keys: list[str], p: FloatArray, d: IntArray) -> dict[str, ScoreCounts]:
    """`ScoreCounts.of` the rows of each code, by key, from one bincount per statistic (sums in row order)."""
    groups, stride = len(keys), max(2, int(d.max()) + 1) if len(d) else 2
    fine = np.bincount(codes * SCORE_BINS + fine_bins(p), minlength=groups * SCORE_BINS)
    decided = codes * stride + d
    decisions = np.bincount(decided, minlength=groups * stride).reshape(groups, stride)[:, :2]
    sums = np.bincount(decided, weights=p, minlength=groups * stride).reshape(groups, stride)[:, :2]
    scores = fine.reshape(groups, SCORE_BINS).astype(np.int64)
    return {
        key: ScoreCounts(scores[g], decisions[g].astype(np.int64), sums[g].astype(np.float64))
        for g, key in enumerate(keys)
    }


def _column(frame: pl.DataFrame, name: str) -> pl.Series:
    if name in frame.columns:
        return frame.get_column(name)
    return pl.Series(name, [None] * frame.height, dtype=pl.Null)


def _codes(known: Encoded, name: str) -> tuple[FloatArray, tuple[str, ...]] | None:
    codes, vocabulary = known.values.get(name), known.vocabularies.get(name)
    return None if codes is None or vocabulary is None else (codes, vocabulary)


def _all_known(codes: FloatArray, column: pl.Series) -> bool:
    """Whether every NaN code is a null value (none is a category outside the vocabulary)."""
    return int(np.count_nonzero(np.isnan(codes))) == column.null_count()


def _numeric(
    column: pl.Series, reference: NumericReference, encoded: FloatArray | None = None
) -> FeatureCounts:
    if encoded is not None and not (column.dtype.is_float() and bool(column.is_nan().any())):
        present = encoded[~column.is_null().to_numpy()] if column.null_count() else encoded
        values_count = len(encoded)
    else:
        values = column.cast(pl.Float64, strict=False).to_numpy()
        present, values_count = values[~np.isnan(values)], len(values)
    return FeatureCounts(
        _bin_counts(present, reference.edges),
        missing=values_count - len(present),
        outside=int(np.count_nonzero((present < reference.low) | (present > reference.high))),
    )


def _bin_counts(present: FloatArray, edges: tuple[float, ...]) -> IntArray:
    """Values per bin between the inner edges (a value on an edge goes to the bin above it)."""
    if len(edges) == 1:  # a boolean's one edge: one comparison, not a search
        above = int(np.count_nonzero(present >= edges[0]))
        return np.asarray([len(present) - above, above], dtype=np.int64)
    bins = np.searchsorted(np.asarray(edges), present, side="right")
    return np.bincount(bins, minlength=len(edges) + 1).astype(np.int64)


def _categorical(
    column: pl.Series, categories: tuple[str, ...], encoded: tuple[FloatArray, tuple[str, ...]] | None = None
) -> FeatureCounts:
    if encoded is not None and _all_known(encoded[0], column):
        return _categorical_codes(column, categories, *encoded)
    counted = column.value_counts()  # then the distinct values as text: fewer casts than one per row
    texts, missing, found = counted.to_series(0).cast(pl.String, strict=False), 0, dict[str, int]()
    for value, count in zip(texts, counted.to_series(1), strict=True):
        if value is None:
            missing += count
        else:
            found[value] = found.get(value, 0) + count
    counts = np.asarray([found.pop(c, 0) for c in categories], dtype=np.int64)
    top = dict(sorted(found.items(), key=lambda item: -item[1])[:MAX_UNKNOWN_VALUES])
    return FeatureCounts(counts, missing=missing, outside=sum(found.values()), unknown_values=top)


def _categorical_codes(
    column: pl.Series, categories: tuple[str, ...], codes: FloatArray, vocabulary: tuple[str, ...]
) -> FeatureCounts:
    """`_categorical` of a column whose every value is null or in `vocabulary`, from its codes."""
    present = codes if column.null_count() == 0 else codes[~np.isnan(codes)]
    by_code = np.bincount(present.astype(np.int64), minlength=len(vocabulary))
    found = {value: int(count) for value, count in zip(vocabulary, by_code, strict=True) if count}
    counts = np.asarray([found.pop(c, 0) for c in categories], dtype=np.int64)
    top = dict(sorted(found.items(), key=lambda item: -item[1])[:MAX_UNKNOWN_VALUES])
    return FeatureCounts(counts, missing=column.null_count(), outside=sum(found.values()), unknown_values=top)
