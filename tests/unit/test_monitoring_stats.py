"""Drift statistics and performance metrics, checked against scipy and scikit-learn."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from scipy import stats as scipy_stats
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

from churn_mlops.models.economics import BusinessCosts
from churn_mlops.monitoring import stats
from churn_mlops.monitoring.counting import build_profile
from churn_mlops.monitoring.performance import ClassCounts, expected_counts, metrics, realised_counts
from churn_mlops.monitoring.profile import Profile
from churn_mlops.monitoring.reference import Reference

Counts = npt.NDArray[np.int64]
SEED = 20_240_611
EVIDENTLY_EPSILON = 1e-4  # the floor Evidently gives empty bins before taking PSI


def _random_pairs() -> list[tuple[Counts, Counts]]:
    """Reference and current counts from different random distributions, some with empty bins."""
    rng = np.random.default_rng(SEED)
    pairs = []
    for bins, reference_rows, current_rows in [(2, 400, 90), (3, 5000, 700), (5, 20, 15), (10, 2000, 60)]:
        for _ in range(3):
            pairs.append(
                (
                    rng.multinomial(reference_rows, rng.dirichlet(np.ones(bins))),
                    rng.multinomial(current_rows, rng.dirichlet(np.ones(bins))),
                )
            )
    pairs.append(
        (rng.multinomial(50_000, rng.dirichlet(np.ones(40))), rng.multinomial(300, np.ones(40) / 40))
    )
    return pairs


EDGE_CASES = {
    "identical": ([120, 30, 50], [120, 30, 50]),
    "same_shares_other_size": ([120, 30, 50], [12, 3, 5]),
    "one_empty_bin_in_reference": ([30, 0, 70], [25, 10, 65]),
    "one_empty_bin_in_current": ([30, 20, 50], [40, 0, 60]),
    "empty_in_both": ([30, 0, 70, 5], [25, 0, 65, 9]),
    "all_mass_in_one_bin_each": ([100, 0, 0], [0, 0, 50]),
    "all_mass_in_one_bin_current": ([40, 35, 25], [0, 80, 0]),
}
PAIRS = _random_pairs() + [(np.asarray(a), np.asarray(b)) for a, b in EDGE_CASES.values()]
PAIR_IDS = [f"random-{i}" for i in range(len(PAIRS) - len(EDGE_CASES))] + list(EDGE_CASES)


def _floored(counts: npt.ArrayLike) -> np.ndarray:
    """Shares with every bin raised to EPSILON, renormalised: the documented PSI smoothing."""
    values = np.asarray(counts, dtype=np.float64)
    shares = np.maximum(values / values.sum(), EVIDENTLY_EPSILON)
    return shares / shares.sum()


@pytest.mark.parametrize(("reference", "current"), PAIRS, ids=PAIR_IDS)
def test_psi_is_scipy_symmetric_kl_of_smoothed_shares(reference: Counts, current: Counts) -> None:
    e, a = _floored(reference), _floored(current)
    expected = scipy_stats.entropy(a, e) + scipy_stats.entropy(e, a)
    assert stats.psi(reference, current) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert stats.psi(current, reference) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("bins", [2, 4, 10, 25])
def test_psi_without_empty_bins_needs_no_smoothing(bins: int) -> None:
    rng = np.random.default_rng([SEED, bins])
    reference = rng.integers(50, 500, bins)
    current = rng.integers(50, 500, bins)
    e, a = reference / reference.sum(), current / current.sum()
    expected = scipy_stats.entropy(a, e) + scipy_stats.entropy(e, a)
    assert stats.psi(reference, current) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("reference", "current"), PAIRS, ids=PAIR_IDS)
def test_js_distance_is_scipy_jensenshannon(reference: Counts, current: Counts) -> None:
    expected = jensenshannon(reference / reference.sum(), current / current.sum())
    assert stats.js_distance(reference, current) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert 0.0 <= stats.js_distance(reference, current) <= np.sqrt(np.log(2)) + 1e-12


@pytest.mark.parametrize(("reference", "current"), PAIRS, ids=PAIR_IDS)
def test_chi_square_p_is_scipy_contingency_test(reference: Counts, current: Counts) -> None:
    table = np.vstack([reference, current])
    table = table[:, table.sum(axis=0) > 0]
    expected = scipy_stats.chi2_contingency(table, correction=False).pvalue
    assert stats.chi_square_p(reference, current) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", ["identical", "same_shares_other_size"])
def test_the_same_distribution_has_no_distance(name: str) -> None:
    reference, current = EDGE_CASES[name]
    assert stats.psi(reference, current) == pytest.approx(0.0, abs=1e-12)
    assert stats.js_distance(reference, current) == pytest.approx(0.0, abs=1e-12)
    assert stats.chi_square_p(reference, current) == pytest.approx(1.0)


def test_disjoint_distributions_are_as_far_apart_as_possible() -> None:
    reference, current = EDGE_CASES["all_mass_in_one_bin_each"]
    assert stats.js_distance(reference, current) == pytest.approx(np.sqrt(np.log(2)))
    assert np.isfinite(stats.psi(reference, current))
    assert stats.psi(reference, current) > 10
    assert stats.chi_square_p(reference, current) < 1e-20


def test_one_empty_bin_keeps_psi_finite() -> None:
    reference, current = EDGE_CASES["one_empty_bin_in_reference"]
    assert 0 < stats.psi(reference, current) < np.inf


@pytest.mark.parametrize(
    ("reference", "current"),
    [([100, 0, 0], [40, 0, 0]), ([10, 20], [0, 0]), ([0, 0, 0], [5, 5, 5])],
    ids=["one_bin_in_both", "empty_current", "empty_reference"],
)
def test_chi_square_has_nothing_to_test_without_two_bins_and_two_samples(
    reference: list[int], current: list[int]
) -> None:
    assert stats.chi_square_p(reference, current) == 1.0


def test_smoothed_shares_sum_to_one_and_floor_empty_bins() -> None:
    shares = stats.smoothed([0, 0, 500, 500])
    assert shares.sum() == pytest.approx(1.0)
    assert shares[0] == shares[1] > 0
    assert shares[2] == shares[3] < 0.5
    assert np.array_equal(stats.smoothed([1, 3]), np.array([0.25, 0.75]))


@pytest.mark.parametrize(("bins", "current", "reference"), [(2, 500, 20_000), (10, 100, 5000), (4, 7, 9)])
@pytest.mark.parametrize("quantile", [0.95, 0.99])
def test_noise_floor_is_the_scaled_chi_square_quantile(
    bins: int, current: int, reference: int, quantile: float
) -> None:
    scaled = scipy_stats.chi2.ppf(quantile, bins - 1) * (1 / current + 1 / reference)
    assert stats.noise_floor("psi", bins, current, reference, quantile) == pytest.approx(scaled, rel=1e-9)
    assert stats.noise_floor("js", bins, current, reference, quantile) == pytest.approx(
        np.sqrt(scaled / 8), rel=1e-9
    )


@pytest.mark.parametrize(("bins", "current", "reference"), [(1, 500, 500), (5, 0, 500), (5, 500, 0)])
def test_noise_floor_is_zero_when_nothing_can_vary(bins: int, current: int, reference: int) -> None:
    assert stats.noise_floor("psi", bins, current, reference) == 0.0
    assert stats.noise_floor("js", bins, current, reference) == 0.0


TRUTHS = {
    "deciles": np.full(10, 0.1),
    "contract": np.array([0.55, 0.21, 0.24]),
    "skewed": np.array([0.05, 0.15, 0.3, 0.5]),
    "boolean": np.array([0.84, 0.16]),
}


@pytest.mark.parametrize("method", ["psi", "js"])
@pytest.mark.parametrize("truth", list(TRUTHS))
@pytest.mark.parametrize(
    ("current_rows", "reference_rows"),
    [(500, 20_000), (20_000, 20_000), (500, None), (20_000, None)],
    ids=["500-vs-sample", "20000-vs-sample", "500-vs-exact", "20000-vs-exact"],
)
def test_samples_of_the_reference_pass_the_noise_floor_99_times_in_100(
    method: str, truth: str, current_rows: int, reference_rows: int | None
) -> None:
    """Without drift the statistic beats its 99% noise floor in about 1% of windows.

    The reference is either itself a sample (both sides vary) or known exactly (reference_rows
    so large that only the window varies)."""
    rng = np.random.default_rng([SEED, current_rows, len(TRUTHS[truth])])
    draws = 2000
    p = TRUTHS[truth]
    currents = rng.multinomial(current_rows, p, size=draws)
    if reference_rows is None:
        references = np.tile(p, (draws, 1))
        reference_rows = 10**12
    else:
        references = rng.multinomial(reference_rows, p, size=draws)
    distance = stats.psi if method == "psi" else stats.js_distance
    floor = stats.noise_floor(method, len(p), current_rows, reference_rows)
    values = np.array([distance(r, c) for r, c in zip(references, currents, strict=True)])
    assert 0.002 <= np.mean(values > floor) <= 0.04


# Performance: class histograms against scikit-learn.

COSTS = BusinessCosts()


def _labelled(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores that separate the classes imperfectly, decisions at 0.5, and labels."""
    rng = np.random.default_rng(seed)
    labels = rng.random(rows) < rng.uniform(0.1, 0.5)
    scores = np.clip(rng.beta(2, 5, rows) + rng.uniform(0.1, 0.4) * labels, 0, 1)
    return scores, (scores >= 0.5).astype(np.int64), labels.astype(np.int64)


def _batches(
    scores: np.ndarray, decisions: np.ndarray, labels: np.ndarray, parts: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    pieces = np.array_split(np.arange(len(scores)), parts)
    return [(scores[i], decisions[i].astype(np.float64), labels[i].astype(np.float64)) for i in pieces]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_realised_metrics_agree_with_scikit_learn(seed: int) -> None:
    scores, decisions, labels = _labelled(seed, 4000)
    result = metrics(realised_counts(_batches(scores, decisions, labels, 3)), COSTS)
    assert result is not None
    assert result["rows"] == len(scores)
    assert result["positive_rate"] == pytest.approx(labels.mean())
    assert result["roc_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=2e-3)
    assert result["pr_auc"] == pytest.approx(average_precision_score(labels, scores), abs=2e-3)
    assert result["precision"] == pytest.approx(precision_score(labels, decisions), rel=1e-12)
    assert result["recall"] == pytest.approx(recall_score(labels, decisions), rel=1e-12)
    churners_contacted = int(np.sum(labels * decisions))
    value = churners_contacted * COSTS.success_rate * COSTS.saved_value - COSTS.offer_cost * decisions.sum()
    assert result["expected_value"] == pytest.approx(value)


def test_tied_scores_count_half_as_scikit_learn_does() -> None:
    """Scores on a few values, each in the middle of its score bin: the histograms lose nothing."""
    rng = np.random.default_rng(SEED)
    levels = (np.array([100, 250, 400, 550, 700, 850]) + 0.5) / 1000
    scores = rng.choice(levels, 3000)
    labels = (rng.random(len(scores)) < scores).astype(np.int64)
    decisions = (scores >= 0.5).astype(np.int64)
    result = metrics(realised_counts([(scores, decisions, labels)]), COSTS)
    assert result is not None
    assert result["roc_auc"] == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    assert result["pr_auc"] == pytest.approx(average_precision_score(labels, scores), rel=1e-12)


@pytest.mark.parametrize("seed", [5, 6])
def test_calibration_error_is_the_ten_bin_gap_between_churners_and_scores(seed: int) -> None:
    scores, decisions, labels = _labelled(seed, 4000)
    result = metrics(realised_counts([(scores, decisions, labels)]), COSTS)
    assert result is not None
    group = np.minimum((scores * 10).astype(int), 9)
    gaps = [abs(labels[group == g].sum() - scores[group == g].sum()) for g in range(10)]
    # the metric reads scores from 1/1000-wide bins, so each row may move by half a bin
    assert result["calibration_error"] == pytest.approx(sum(gaps) / len(scores), abs=1e-3)


def _window_profile(scores: np.ndarray, decisions: np.ndarray) -> Profile:
    """A profile of predictions alone, in a reference with no monitored features."""
    edges = np.linspace(0, 1, 21).tolist()
    reference = Reference.from_profile(
        "v", {"rows": 1, "score": {"edges": edges, "fractions": [0.05] * 20}}, 0.5, {}
    )
    return build_profile(pl.DataFrame({"row": np.arange(len(scores))}), scores, decisions, reference)


def test_estimated_performance_matches_realised_when_probabilities_are_calibrated() -> None:
    rng = np.random.default_rng(SEED)
    scores = rng.beta(2, 5, 20_000)
    labels = (rng.random(len(scores)) < scores).astype(np.int64)
    decisions = (scores >= 0.4).astype(np.int64)
    estimated_counts = expected_counts(_window_profile(scores, decisions))
    estimated = metrics(estimated_counts, COSTS)
    realised = metrics(realised_counts([(scores, decisions, labels)]), COSTS)
    assert estimated is not None
    assert realised is not None
    assert estimated["roc_auc"] == pytest.approx(realised["roc_auc"], abs=0.02)
    assert estimated["pr_auc"] == pytest.approx(realised["pr_auc"], abs=0.02)
    assert estimated["precision"] == pytest.approx(realised["precision"], abs=0.03)
    assert estimated["recall"] == pytest.approx(realised["recall"], abs=0.03)
    assert estimated["positive_rate"] == pytest.approx(labels.mean(), abs=0.01)
    assert estimated_counts.tp == pytest.approx(scores[decisions == 1].sum())
    assert estimated_counts.fn == pytest.approx(scores[decisions == 0].sum())
    assert estimated_counts.tp + estimated_counts.fp == decisions.sum()


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_has_no_auc(label: int) -> None:
    scores, decisions, _ = _labelled(7, 300)
    result = metrics(realised_counts([(scores, decisions, np.full(len(scores), label))]), COSTS)
    assert result is not None
    assert result["roc_auc"] is None
    assert result["pr_auc"] is None
    assert result["positive_rate"] == label


def test_no_predictions_have_no_metrics() -> None:
    assert metrics(ClassCounts.empty(), COSTS) is None
    assert metrics(realised_counts([]), COSTS) is None
    empty = np.array([], dtype=np.float64)
    assert metrics(expected_counts(_window_profile(empty, empty.astype(np.int64))), COSTS) is None
