"""Drift of a window against the reference, per feature and for the scores, and data quality.

With method `auto` the test follows the window's size and the column's type, as Evidently
chooses: a chi-square test on small windows (where distances are mostly noise), PSI for numeric
and Jensen-Shannon distance for categorical columns otherwise. PSI and JS are reported for every
feature whatever decides. With `learned` thresholds a distance must also exceed what sampling
noise alone reaches at the window's size (see `stats.noise_floor`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from churn_mlops.monitoring import stats
from churn_mlops.monitoring.profile import FeatureCounts, Profile
from churn_mlops.monitoring.reference import Reference
from churn_mlops.settings import DriftSettings


def drift_report(profile: Profile, reference: Reference, settings: DriftSettings) -> dict[str, Any]:
    """Per-feature drift, the share of drifted features and the score distribution's drift."""
    features = [
        _feature(
            name,
            "numeric",
            profile.features[name],
            np.asarray(ref.fractions),
            _present(reference, ref.missing),
            settings,
        )
        for name, ref in reference.numeric.items()
        if name in profile.features
    ]
    features += [
        _feature(
            name,
            "categorical",
            profile.features[name],
            np.append(ref.fractions, 0.0),
            _present(reference, ref.missing),
            settings,
        )
        for name, ref in reference.categorical.items()
        if name in profile.features
    ]
    judged = [f for f in features if f["rows"] > 0]
    drifted = [f["feature"] for f in judged if f["drifted"]]
    share = len(drifted) / len(judged) if judged else None
    return {
        "share": share,
        "drifted": share is not None and share > settings.share,
        "drifted_features": drifted,
        "features": features,
        "score": score_drift(profile, reference, settings),
    }


def _feature(
    name: str,
    kind: str,
    counts: FeatureCounts,
    expected: np.ndarray,
    reference_rows: int,
    settings: DriftSettings,
) -> dict[str, Any]:
    current = counts.counts if kind == "numeric" else np.append(counts.counts, counts.outside)
    rows = int(current.sum())
    result: dict[str, Any] = {"feature": name, "type": kind, "rows": rows}
    if rows == 0 or expected.sum() == 0:
        return result | {"method": None, "value": None, "threshold": None, "drifted": False}
    reference_counts = expected / expected.sum() * reference_rows
    result["psi"] = stats.psi(expected, current)
    result["js"] = stats.js_distance(expected, current)
    method = _method(kind, rows, settings)
    if method == "chi2":
        p = stats.chi_square_p(reference_counts, current)
        return result | {
            "method": method,
            "value": p,
            "threshold": settings.p_value,
            "drifted": p < settings.p_value,
        }
    threshold = settings.psi if method == "psi" else settings.js
    if settings.learned:
        bins = int(np.count_nonzero(expected))  # a bin the reference never filled adds no noise
        threshold = max(threshold, stats.noise_floor(method, bins, rows, reference_rows))
    value = result[method]
    return result | {"method": method, "value": value, "threshold": threshold, "drifted": value > threshold}


def _present(reference: Reference, missing: float) -> int:
    """Reference rows with a value: the sample a feature's fractions come from."""
    return max(round(reference.rows * (1 - missing)), 1)


def _method(kind: str, rows: int, settings: DriftSettings) -> str:
    if settings.method != "auto":
        return settings.method
    if rows <= settings.small_window:
        return "chi2"
    return "psi" if kind == "numeric" else "js"


def score_drift(profile: Profile, reference: Reference, settings: DriftSettings) -> dict[str, Any]:
    """PSI of the window's scores against the reference's, in the reference's score bins."""
    rows = int(profile.scores.sum())
    expected = np.asarray(reference.score_fractions)
    if rows == 0 or expected.sum() == 0:
        return {
            "method": "psi",
            "value": None,
            "threshold": settings.score_psi,
            "drifted": False,
            "mean": None,
        }
    current = np.bincount(reference.score_bin_map(), weights=profile.scores, minlength=len(expected))
    value = stats.psi(expected, current)
    threshold = settings.score_psi
    if settings.learned:
        bins = int(np.count_nonzero(expected))
        threshold = max(threshold, stats.noise_floor("psi", bins, rows, reference.rows))
    centres = (np.arange(len(profile.scores)) + 0.5) / len(profile.scores)
    return {
        "method": "psi",
        "value": value,
        "threshold": threshold,
        "drifted": value > threshold,
        "mean": float((centres * profile.scores).sum() / rows),
        "positive_rate": float(profile.decisions[1] / max(profile.decisions.sum(), 1)),
    }


def quality_report(profile: Profile, reference: Reference) -> dict[str, Any]:
    """Missing values, values beyond the training range and unseen categories, per feature."""
    rows = max(profile.rows, 1)
    missing = {name: f.missing / rows for name, f in profile.features.items() if f.missing}
    outside = {name: f.outside / rows for name, f in profile.features.items() if f.outside}
    expected_missing = {name: ref.missing for name, ref in reference.numeric.items()}
    expected_missing |= {name: ref.missing for name, ref in reference.categorical.items()}
    return {
        "rows": profile.rows,
        "missing": missing,
        "reference_missing": {name: expected_missing.get(name, 0.0) for name in missing},
        "out_of_range": {name: rate for name, rate in outside.items() if name in reference.numeric},
        "unknown_category": {name: rate for name, rate in outside.items() if name in reference.categorical},
        "unknown_values": {
            name: f.unknown_values for name, f in profile.features.items() if f.unknown_values
        },
    }
