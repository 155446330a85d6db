"""A window's distributions beside the reference's, for the dashboard: scores and every feature.

Shares, not counts, so a day and a reference of a different size are drawn on one axis. Stored
with the window's result, so the dashboard draws them without reading a profile.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from churn_mlops.monitoring.profile import Profile
from churn_mlops.monitoring.reference import NumericReference, Reference


def distributions(profile: Profile, reference: Reference) -> dict[str, Any]:
    """Score and feature histograms of the window and the reference, and the decision rate."""
    decided = int(profile.decisions.sum())
    return {
        "decision_rate": _ratio(int(profile.decisions[1]), decided),
        "scores": _scores(profile, reference),
        "features": {name: _feature(profile, reference, name) for name in reference.features},
    }


def _scores(profile: Profile, reference: Reference) -> dict[str, Any]:
    counts = np.bincount(
        reference.score_bin_map(), weights=profile.scores, minlength=len(reference.score_fractions)
    )
    edges = reference.score_edges
    return {
        "labels": [f"{edges[i]:.2f}-{edges[i + 1]:.2f}" for i in range(len(edges) - 1)],
        "window": _shares(counts),
        "reference": list(reference.score_fractions),
    }


def _feature(profile: Profile, reference: Reference, name: str) -> dict[str, Any]:
    counts = profile.features.get(name)
    if name in reference.numeric:
        numeric = reference.numeric[name]
        labels, expected = _numeric_labels(numeric), list(numeric.fractions)
        window = _shares(counts.counts) if counts is not None else [0.0] * len(labels)
    else:
        categorical = reference.categorical[name]
        labels, expected = [*categorical.categories, "(unseen)"], [*categorical.fractions, 0.0]
        seen = np.zeros(len(labels)) if counts is None else np.append(counts.counts, counts.outside)
        window = _shares(seen)
    return {"labels": labels, "window": window, "reference": expected}


def _numeric_labels(numeric: NumericReference) -> list[str]:
    if numeric.edges == (0.5,):  # a boolean
        return ["0", "1"]
    edges = [_short(e) for e in numeric.edges]
    return [f"<{edges[0]}", *(f"{a}-{b}" for a, b in itertools.pairwise(edges)), f">={edges[-1]}"]


def _short(value: float) -> str:
    return f"{value:.4g}"


def _shares(counts: np.ndarray) -> list[float]:
    total = float(np.sum(counts))
    return [round(float(c) / total, 6) if total else 0.0 for c in counts]


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None
