"""Slices of customers: each category of a column, or each band of a numeric one between edges.

Evaluation reports metrics per slice and monitoring does the same per window, with the same
labels ('Month-to-month'; '<12', '12-24', '>=48'; 'missing' for nulls).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import polars as pl

MISSING = "missing"


def slice_labels(
    series: pl.Series, edges: Sequence[float] | None
) -> tuple[npt.NDArray[np.object_], list[str]]:
    """Each row's slice label and every label in order: categories sorted, or bands, nulls last."""
    return _categories(series) if edges is None else _bands(series, edges)


def _categories(series: pl.Series) -> tuple[npt.NDArray[np.object_], list[str]]:
    """Each row's category label and the labels in sorted order, nulls last as 'missing'."""
    labels = series.cast(pl.String).fill_null(MISSING).to_numpy().astype(object)
    order = series.unique().sort(nulls_last=True).cast(pl.String).fill_null(MISSING).to_list()
    return labels, order


def _bands(series: pl.Series, edges: Sequence[float]) -> tuple[npt.NDArray[np.object_], list[str]]:
    """Each row's band label ('<a', 'a-b', '>=z') and the labels in band order, nulls last as 'missing'."""
    bounds = np.asarray(edges, dtype=np.float64)
    if bounds.ndim != 1 or bounds.size == 0 or np.any(np.diff(bounds) <= 0):
        raise ValueError(f"band edges for {series.name!r} must be non-empty and increasing, got {edges}")
    if not series.dtype.is_numeric():
        raise ValueError(f"column {series.name!r} is {series.dtype}, not numeric; give None for categories")
    middle = [f"{lo:g}-{hi:g}" for lo, hi in itertools.pairwise(bounds)]
    order = [f"<{bounds[0]:g}", *middle, f">={bounds[-1]:g}", MISSING]
    values = series.cast(pl.Float64).fill_null(np.nan).to_numpy()
    index = np.where(np.isnan(values), len(order) - 1, np.searchsorted(bounds, values, side="right"))
    return np.asarray(order, dtype=object)[index], order
