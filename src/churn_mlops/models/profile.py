"""The reference profile: training-time distributions of every input and of the scores.

Drift monitoring compares live traffic against it, bin for bin, without the training data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from churn_mlops.features.spec import FeatureSpec

QUANTILES = np.linspace(0, 1, 11)
SCORE_BINS = np.linspace(0, 1, 21)


def reference_profile(frame: pl.DataFrame, scores: np.ndarray, features: FeatureSpec) -> dict[str, Any]:
    """Per-feature bins and frequencies of the training rows, and the histogram of `scores`
    (held-out scores: a model's scores on its own training rows are more extreme than on new rows)."""
    numeric = {f.name: _numeric(frame.get_column(f.name), f.boolean) for f in features.numeric}
    categorical = {f.name: _categorical(frame.get_column(f.name)) for f in features.categorical}
    counts, _ = np.histogram(scores, bins=SCORE_BINS)
    return {
        "rows": frame.height,
        "numeric": numeric,
        "categorical": categorical,
        "score": {
            "edges": SCORE_BINS.tolist(),
            "fractions": (counts / max(len(scores), 1)).tolist(),
            "mean": float(np.mean(scores)) if len(scores) else None,
        },
    }


def _numeric(column: pl.Series, boolean: bool = False) -> dict[str, Any]:
    """Quantile bins (a boolean's two values), fractions over the present values, the range."""
    values = column.cast(pl.Float64).drop_nulls().to_numpy()
    if len(values) == 0:
        return {"edges": [], "fractions": [], "missing": 1.0, "mean": None, "std": None}
    edges = np.unique(np.quantile(values, QUANTILES))
    inner = np.array([0.5]) if boolean else edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1)
    return {
        "edges": inner.tolist(),
        "fractions": (counts / len(values)).tolist(),
        "missing": column.null_count() / max(column.len(), 1),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(edges[0]),
        "max": float(edges[-1]),
    }


def _categorical(column: pl.Series) -> dict[str, Any]:
    counts = column.fill_null("__missing__").value_counts(sort=True)
    total = max(column.len(), 1)
    return {"fractions": {str(row[0]): row[1] / total for row in counts.iter_rows()}}
