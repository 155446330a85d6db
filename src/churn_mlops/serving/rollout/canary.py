"""A canary: the model that answers a stable share of customers, and the guards that judge it."""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from churn_mlops.serving.model import LoadedModel
from churn_mlops.settings import RolloutSettings

_SHARES = 10_000  # a canary's fraction is applied in steps of 0.01%
# The chi-square distribution's 99.9th percentile by degrees of freedom (0 to 9), for PSI's noise
# floor: a rollback is drastic, and the guards judge the same canary again at every poll.
CHI2_999 = (0.0, 10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877)


class Canary:
    """The model that answers a stable share of customers while a canary runs, and how it fares.

    A scoring that fails is answered by the champion instead (the client never sees it) and
    counted; the guard rules judge the counts, the canary's scoring times and its scores
    against the champion's.
    """

    def __init__(self, model: LoadedModel, fraction: float) -> None:
        self.model, self.fraction = model, fraction
        self.answered = self.failed = self.agreed = 0
        self.seconds: deque[float] = deque(maxlen=2000)  # the latest scoring times
        self.scores = np.zeros((2, 10), dtype=np.int64)  # score histograms: champion, canary

    def takes(self, customer_id: Any, answer_id: str) -> bool:
        """Whether this customer (by id; by answer id without one) is answered by the canary model."""
        key = str(customer_id) if customer_id is not None else answer_id
        return zlib.crc32(key.encode()) % _SHARES < self.fraction * _SHARES

    def observe(self, canary: bool, probabilities: Sequence[float], seconds: float = 0.0) -> None:
        """Count answered scores (and, for the canary, how long its scoring took)."""
        bins = np.minimum((np.asarray(probabilities) * 10).astype(np.int64), 9)
        self.scores[int(canary)] += np.bincount(bins, minlength=10)
        if canary:
            self.answered += len(probabilities)
            self.seconds.append(seconds)

    def agree(self, count: int) -> None:
        """Count canary answers whose decision the champion would have made too."""
        self.agreed += count

    def fail(self, count: int) -> None:
        """Count canary scorings that failed (their customers were answered by the champion)."""
        self.failed += count

    def verdict(self, guards: RolloutSettings) -> str | None:
        """Why the canary must stop, or None while every guard holds."""
        tried = self.answered + self.failed
        if tried < guards.min_requests:
            return None
        if self.failed / tried > guards.max_error_rate:
            limit = f"{guards.max_error_rate:.0%}"
            return f"{self.failed} of {tried} canary scorings failed (guard: at most {limit})"
        p99 = float(np.percentile(self.seconds, 99)) * 1000 if self.seconds else 0.0
        if p99 > guards.max_p99_ms:
            return f"canary scoring p99 {p99:.0f} ms (guard: {guards.max_p99_ms:g} ms)"
        expected, actual = merged_bins(self.scores[0], self.scores[1])
        shift = psi(expected, actual)
        champion, canary = int(expected.sum()), int(actual.sum())
        # Sampling noise alone reaches this PSI in 0.1% of samples this size.
        noise = CHI2_999[len(expected) - 1] * (1 / max(champion, 1) + 1 / max(canary, 1))
        if shift > max(guards.max_score_psi, noise):
            limit = f"{max(guards.max_score_psi, noise):.2f}"
            return f"canary scores drifted from the champion's: PSI {shift:.2f} (guard: {limit})"
        return None


def merged_bins(
    expected: np.ndarray, actual: np.ndarray, share: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Adjacent score bins merged until each holds `share` of the champion's scores: sparse bins
    make PSI swing on a handful of scores."""
    total = expected.sum()
    if total == 0:
        return expected, actual
    merged_e, merged_a, e, a = [], [], 0, 0
    for count_e, count_a in zip(expected, actual, strict=True):
        e, a = e + count_e, a + count_a
        if e >= share * total:
            merged_e.append(e)
            merged_a.append(a)
            e = a = 0
    if e or a:  # the rest joins the last bin
        if merged_e:
            merged_e[-1] += e
            merged_a[-1] += a
        else:
            merged_e.append(e)
            merged_a.append(a)
    return np.asarray(merged_e), np.asarray(merged_a)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two histograms, empty bins floored at 1e-4."""
    if expected.sum() == 0 or actual.sum() == 0:
        return 0.0
    e = np.maximum(expected / expected.sum(), 1e-4)
    a = np.maximum(actual / actual.sum(), 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))
