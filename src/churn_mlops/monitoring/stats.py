"""Distances between two binned distributions: PSI, Jensen-Shannon and the chi-square test.

Every function takes counts (or fractions) over the same bins, reference first. PSI smooths
empty bins to EPSILON, as Evidently does, so one empty bin does not make it infinite.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special

EPSILON = 1e-4
FloatArray = npt.NDArray[np.float64]


def fractions(counts: npt.ArrayLike) -> FloatArray:
    """Counts as fractions of their total (all zeros stay zeros)."""
    values = np.asarray(counts, dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else values


def smoothed(counts: npt.ArrayLike) -> FloatArray:
    """Fractions with every bin at least EPSILON, renormalised."""
    floored = np.maximum(fractions(counts), EPSILON)
    return np.asarray(floored / floored.sum(), dtype=np.float64)


def psi(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Population stability index: the symmetric Kullback-Leibler divergence of smoothed fractions."""
    expected, actual = smoothed(reference), smoothed(current)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def js_distance(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (natural log, so between 0 and sqrt(ln 2))."""
    p, q = fractions(reference), fractions(current)
    middle = (p + q) / 2
    divergence = (_kl(p, middle) + _kl(q, middle)) / 2
    return float(np.sqrt(max(divergence, 0.0)))


def _kl(p: FloatArray, q: FloatArray) -> float:
    present = p > 0
    return float(np.sum(p[present] * np.log(p[present] / q[present])))


def chi_square_p(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """p-value of Pearson's chi-square test that both samples come from one distribution.

    A 2 x k contingency test, so the reference's own sampling noise counts too; bins empty in
    both are left out. Fewer than two bins left: nothing to test, p = 1.
    """
    table = np.vstack([np.asarray(reference, np.float64), np.asarray(current, np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return float(special.chdtrc(table.shape[1] - 1, statistic))


def noise_floor(
    method: str, bins: int, current_rows: int, reference_rows: int, quantile: float = 0.99
) -> float:
    """What a statistic reaches from sampling noise alone, at `quantile`, for samples of these sizes.

    Both PSI and the squared JS distance are, for small differences, a chi-square statistic
    scaled by (1/n + 1/m) (JS by a further 1/8): the threshold NannyML learns on reference
    chunks, in closed form, with nothing to sample.
    """
    if bins < 2 or current_rows <= 0 or reference_rows <= 0:
        return 0.0
    scaled = float(special.chdtri(bins - 1, 1 - quantile)) * (1 / current_rows + 1 / reference_rows)
    return scaled if method == "psi" else float(np.sqrt(scaled / 8))
