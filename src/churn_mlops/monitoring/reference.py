"""The reference a window is compared with: a model version's training profile, as bins.

Parsed from the version's `profile.json` (see `models/profile.py`): numeric features keep their
quantile edges, booleans two bins, categorical features their training categories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

MISSING = "__missing__"
SCORE_BINS = 1000  # a window's fine score histogram; the reference's bins are unions of these


@dataclass(frozen=True)
class NumericReference:
    """A numeric feature's inner bin edges, training fractions and range."""

    edges: tuple[float, ...]
    fractions: tuple[float, ...]
    missing: float
    low: float
    high: float

    @property
    def bins(self) -> int:
        """Bins a value falls in: one more than the inner edges."""
        return len(self.edges) + 1


@dataclass(frozen=True)
class CategoricalReference:
    """A categorical feature's training categories and their fractions (missing apart)."""

    categories: tuple[str, ...]
    fractions: tuple[float, ...]
    missing: float


@dataclass(frozen=True)
class Reference:
    """Everything drift needs of one model version: bins, fractions, sizes and the threshold."""

    version: str
    rows: int
    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    score_edges: tuple[float, ...]
    score_fractions: tuple[float, ...]
    threshold: float
    test_metrics: dict[str, float]

    @classmethod
    def from_profile(
        cls, version: str, profile: dict[str, Any], threshold: float, test_metrics: dict[str, float]
    ) -> Reference:
        """The reference of a version, from its profile.json document."""
        numeric = {name: _numeric(entry) for name, entry in profile.get("numeric", {}).items()}
        categorical = {name: _categorical(entry) for name, entry in profile.get("categorical", {}).items()}
        score = profile["score"]
        return cls(
            version=version,
            rows=int(profile["rows"]),
            numeric={name: ref for name, ref in numeric.items() if ref.bins >= 2},
            categorical=categorical,
            score_edges=tuple(score["edges"]),
            score_fractions=tuple(score["fractions"]),
            threshold=threshold,
            test_metrics=test_metrics,
        )

    @property
    def features(self) -> tuple[str, ...]:
        """Every monitored feature: numeric first, then categorical."""
        return (*self.numeric, *self.categorical)

    def score_bin_map(self) -> npt.NDArray[np.int64]:
        """For each fine score bin, the reference score bin it falls in."""
        centres = (np.arange(SCORE_BINS) + 0.5) / SCORE_BINS
        inner = np.asarray(self.score_edges[1:-1], dtype=np.float64)
        return np.searchsorted(inner, centres, side="right").astype(np.int64)


def _numeric(entry: dict[str, Any]) -> NumericReference:
    edges = tuple(float(e) for e in entry.get("edges", ()))
    return NumericReference(
        edges=edges,
        fractions=tuple(float(f) for f in entry.get("fractions", ())),
        missing=float(entry.get("missing", 0.0)),
        low=float(entry.get("min", -np.inf)),
        high=float(entry.get("max", np.inf)),
    )


def _categorical(entry: dict[str, Any]) -> CategoricalReference:
    fractions = {str(k): float(v) for k, v in entry["fractions"].items()}
    missing = fractions.pop(MISSING, 0.0)
    present = sum(fractions.values())
    categories = tuple(sorted(fractions))
    return CategoricalReference(
        categories=categories,
        fractions=tuple(fractions[c] / present if present else 0.0 for c in categories),
        missing=missing,
    )
