"""Profiles, the unit of monitoring: counts in the reference's bins that add up.

A profile of a set of predictions holds, per feature, counts in the champion's reference bins
(plus missing, and out-of-range or unknown-category counts), a fine score histogram and the
decision counts, overall and per slice (contract, tenure band, ...). Profiles of disjoint sets
add up, so a week is the sum of its days and a Spark job's partitions are summed on the
driver; nothing after the profile needs the rows again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from churn_mlops.monitoring.reference import SCORE_BINS, Reference

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Slices = Mapping[str, Sequence[float] | None]  # column: band edges, or None for its categories
MAX_UNKNOWN_VALUES = 20  # unseen categories named per feature; the rest are only counted


@dataclass
class FeatureCounts:
    """One feature's counts: per reference bin or category, missing, and outside the reference
    (a numeric value beyond the training range, or a category training never saw)."""

    counts: IntArray
    missing: int = 0
    outside: int = 0
    unknown_values: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: FeatureCounts) -> FeatureCounts:
        unknown = dict(self.unknown_values)
        for value, count in other.unknown_values.items():
            unknown[value] = unknown.get(value, 0) + count
        top = dict(sorted(unknown.items(), key=lambda item: -item[1])[:MAX_UNKNOWN_VALUES])
        return FeatureCounts(
            self.counts + other.counts, self.missing + other.missing, self.outside + other.outside, top
        )

    @property
    def present(self) -> int:
        """Rows with a value."""
        return int(self.counts.sum())


@dataclass
class ScoreCounts:
    """Scores of some predictions: a fine histogram, the decisions, the probabilities' sum per decision."""

    scores: IntArray
    decisions: IntArray
    decided_sum: FloatArray

    @classmethod
    def of(cls, probabilities: npt.ArrayLike, decisions: npt.ArrayLike) -> ScoreCounts:
        """The counts of these probabilities and 0/1 decisions."""
        p = np.asarray(probabilities, dtype=np.float64)
        d = np.asarray(decisions, dtype=np.int64)
        return cls(
            np.bincount(fine_bins(p), minlength=SCORE_BINS).astype(np.int64),
            np.bincount(d, minlength=2)[:2].astype(np.int64),
            np.asarray(np.bincount(d, weights=p, minlength=2)[:2], dtype=np.float64),
        )

    def __add__(self, other: ScoreCounts) -> ScoreCounts:
        return ScoreCounts(
            self.scores + other.scores, self.decisions + other.decisions, self.decided_sum + other.decided_sum
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document, the histogram sparse."""
        return {
            "scores": _sparse(self.scores),
            "decisions": self.decisions.tolist(),
            "decided_sum": self.decided_sum.tolist(),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ScoreCounts:
        """Counts from their JSON document."""
        scores = _zeros(SCORE_BINS)
        for index, count in document["scores"].items():
            scores[int(index)] = count
        return cls(
            scores,
            np.asarray(document["decisions"], dtype=np.int64),
            np.asarray(document["decided_sum"], dtype=np.float64),
        )


@dataclass
class Profile:
    """Counts of one set of predictions in one reference's bins."""

    rows: int
    features: dict[str, FeatureCounts]
    scores: IntArray
    decisions: IntArray
    decided_sum: FloatArray  # sum of the probabilities of each decision
    slices: dict[str, ScoreCounts] = field(default_factory=dict)  # by "column=label"

    @classmethod
    def empty(cls, reference: Reference) -> Profile:
        """A profile of no rows."""
        features = {name: FeatureCounts(_zeros(ref.bins)) for name, ref in reference.numeric.items()}
        features |= {
            name: FeatureCounts(_zeros(len(ref.categories))) for name, ref in reference.categorical.items()
        }
        return cls(0, features, _zeros(SCORE_BINS), _zeros(2), np.zeros(2))

    def __add__(self, other: Profile) -> Profile:
        names = self.features.keys() | other.features.keys()
        slices = dict(self.slices)
        for key, counts in other.slices.items():
            slices[key] = slices[key] + counts if key in slices else counts
        return Profile(
            self.rows + other.rows,
            {name: _add(self.features.get(name), other.features.get(name)) for name in names},
            self.scores + other.scores,
            self.decisions + other.decisions,
            self.decided_sum + other.decided_sum,
            slices,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document; `from_json` reads it back."""
        return {
            "rows": self.rows,
            "features": {
                name: {
                    "counts": f.counts.tolist(),
                    "missing": f.missing,
                    "outside": f.outside,
                    "unknown_values": f.unknown_values,
                }
                for name, f in self.features.items()
            },
            **ScoreCounts(self.scores, self.decisions, self.decided_sum).to_json(),
            "slices": {key: counts.to_json() for key, counts in self.slices.items()},
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Profile:
        """A profile from its JSON document."""
        features = {
            name: FeatureCounts(
                np.asarray(f["counts"], dtype=np.int64), f["missing"], f["outside"], f["unknown_values"]
            )
            for name, f in document["features"].items()
        }
        scored = ScoreCounts.from_json(document)
        return cls(
            int(document["rows"]),
            features,
            scored.scores,
            scored.decisions,
            scored.decided_sum,
            {key: ScoreCounts.from_json(c) for key, c in document.get("slices", {}).items()},
        )


def total(profiles: Iterable[Profile], reference: Reference) -> Profile:
    """The sum of profiles (an empty one if there are none)."""
    result = Profile.empty(reference)
    for profile in profiles:
        result = result + profile
    return result


def fine_bins(p: FloatArray) -> IntArray:
    """Each probability's bin in the fine score histogram."""
    return np.minimum((p * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)


def _add(a: FeatureCounts | None, b: FeatureCounts | None) -> FeatureCounts:
    if a is None or b is None:
        kept = a if b is None else b
        assert kept is not None
        return kept
    return a + b


def _zeros(n: int) -> IntArray:
    return np.zeros(n, dtype=np.int64)


def _sparse(counts: IntArray) -> dict[str, int]:
    """Non-zero bins by index, as JSON keys."""
    return {str(i): int(counts[i]) for i in np.flatnonzero(counts)}
