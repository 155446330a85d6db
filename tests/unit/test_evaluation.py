"""Evaluation: thresholds, metrics, slices, bootstrap comparisons, plots and the model card."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from churn_mlops.models.card import ModelCardInfo, model_card
from churn_mlops.models.economics import BusinessCosts
from churn_mlops.models.evaluation import (
    binary_metrics,
    bootstrap_difference,
    choose_threshold,
    expected_calibration_error,
    slice_metrics,
)
from churn_mlops.models.plots import save_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _scores(n: int, *, seed: int, signal: float = 1.0, decimals: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Labels with a 30% churn rate and rounded (so tied) probabilities carrying some signal."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    logits = signal * (2 * y - 1) + rng.normal(0.0, 1.0, n)
    return y, np.round(1.0 / (1.0 + np.exp(-logits)), decimals)


@pytest.mark.parametrize("seed", range(5))
def test_f1_threshold_matches_a_brute_force_search(seed: int) -> None:
    y, p = _scores(60, seed=seed, decimals=1)
    candidates = np.unique(p)
    f1s = [f1_score(y, p >= t) for t in candidates]
    best = max(f1s)
    expected = max(t for t, f1 in zip(candidates, f1s, strict=True) if f1 == pytest.approx(best, abs=1e-12))
    assert choose_threshold(y, p, rule="f1") == pytest.approx(expected)


def test_value_threshold_matches_a_brute_force_search() -> None:
    y, p = _scores(200, seed=3)
    costs = BusinessCosts(offer_cost=20.0, saved_value=150.0, success_rate=0.4)
    values = {t: costs.value(y, p >= t) for t in np.unique(p)}
    assert choose_threshold(y, p, rule="value", costs=costs) == max(values, key=lambda t: (values[t], t))


def test_value_threshold_contacts_nobody_when_every_offer_loses_money() -> None:
    y, p = _scores(200, seed=4)
    costs = BusinessCosts(offer_cost=100.0, saved_value=10.0, success_rate=0.5)
    threshold = choose_threshold(y, p, rule="value", costs=costs)
    assert threshold > p.max()
    assert threshold == np.nextafter(p.max(), np.inf)
    assert not (p >= threshold).any()


def test_threshold_ties_go_to_the_highest_threshold() -> None:
    # with 2 churners, contacting the top row (tp=1, pp=1) or all four (tp=2, pp=4) both give F1 = 2/3
    y = np.array([1, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.7, 0.6])
    assert f1_score(y, p >= 0.9) == pytest.approx(f1_score(y, p >= 0.6))
    assert choose_threshold(y, p) == 0.9


def test_threshold_search_is_fast_on_a_million_rows() -> None:
    y, p = _scores(1_000_000, seed=0, decimals=6)
    start = time.perf_counter()
    choose_threshold(y, p, rule="value")
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([], [], "empty"),
        ([1, 1, 1], [0.2, 0.5, 0.9], "single class"),
        ([0, 1], [0.2, 1.5], r"\[0, 1\]"),
        ([0, 1, 0], [0.2, 0.5], "equal length"),
    ],
)
def test_bad_inputs_are_refused(y: list[int], p: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose_threshold(np.array(y), np.array(p))
    with pytest.raises(ValueError, match=message):
        binary_metrics(np.array(y), np.array(p), 0.5)


def test_metrics_on_a_hand_computed_example() -> None:
    # 20 rows, 4 churners; ranked by probability: the top two rows are churner, non-churner
    p = np.linspace(0.95, 0.0, 20)
    y = np.zeros(20, dtype=np.int64)
    y[[0, 2, 5, 12]] = 1
    costs = BusinessCosts(offer_cost=10.0, saved_value=200.0, success_rate=0.3)
    metrics = binary_metrics(y, p, threshold=0.7, costs=costs)  # predicts the top 6 rows: 3 churners
    assert list(metrics) == [
        *("roc_auc", "pr_auc", "log_loss", "brier", "calibration_error", "precision", "recall", "f1"),
        *("accuracy", "lift_top10", "capture_top10", "positive_rate", "predicted_positive_rate"),
        *("expected_value", "n"),
    ]
    assert all(type(value) is float for value in metrics.values())
    assert metrics["n"] == 20.0
    assert metrics["positive_rate"] == pytest.approx(0.2)
    assert metrics["predicted_positive_rate"] == pytest.approx(0.3)
    assert metrics["precision"] == pytest.approx(3 / 6)
    assert metrics["recall"] == pytest.approx(3 / 4)
    assert metrics["f1"] == pytest.approx(2 * 3 / (6 + 4))
    assert metrics["accuracy"] == pytest.approx((3 + 13) / 20)
    assert metrics["lift_top10"] == pytest.approx((1 / 2) / (4 / 20))
    assert metrics["capture_top10"] == pytest.approx(1 / 4)
    assert metrics["expected_value"] == pytest.approx(3 * 0.3 * 200 - 6 * 10)
    # churners (ranks 0, 2, 5, 12) outrank 16, 15, 13 and 7 of the 16 non-churners
    assert metrics["roc_auc"] == pytest.approx(51 / 64)
    assert metrics["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 6 + 4 / 13) / 4)
    assert metrics["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_lift_counts_the_top_tenth_rounded_up() -> None:
    y = np.array([1] + [0] * 8 + [1] * 1 + [0] * 5)  # 15 rows: the top 2 hold one of two churners
    p = np.linspace(1.0, 0.0, 15)
    metrics = binary_metrics(y, p, 0.5)
    assert metrics["capture_top10"] == pytest.approx(1 / 2)
    assert metrics["lift_top10"] == pytest.approx((1 / 2) / (2 / 15))


def test_calibration_error_is_zero_for_calibrated_bins_and_the_gap_otherwise() -> None:
    p = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    assert binary_metrics(y, p, 0.5)["calibration_error"] == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(8, 0.05)) == pytest.approx(0.5 - 0.05)


def test_slices_band_numbers_and_split_categories() -> None:
    frame = pl.DataFrame(
        {
            "tenure": [1, 11, 12, 30, 47, 48, 70, None],
            "contract": ["monthly", "yearly", "monthly", "two_year", "monthly", "yearly", None, "monthly"],
        }
    )
    y = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    p = np.array([0.9, 0.2, 0.4, 0.1, 0.7, 0.6, 0.3, 0.8])
    rows = slice_metrics(frame, y, p, 0.5, {"tenure": [12, 24, 48], "contract": None})
    labelled = {(row["slice"], row["value"]): row for row in rows}
    assert list(labelled) == [
        ("contract", "monthly"),
        ("contract", "two_year"),
        ("contract", "yearly"),
        ("contract", "missing"),
        ("tenure", "<12"),
        ("tenure", "12-24"),
        ("tenure", "24-48"),
        ("tenure", ">=48"),
        ("tenure", "missing"),
    ]
    assert [row["n"] for row in rows if row["slice"] == "tenure"] == [2, 1, 2, 2, 1]
    monthly = labelled[("contract", "monthly")]
    assert monthly["n"] == 4
    assert monthly["positive_rate"] == pytest.approx(1.0)
    assert monthly["roc_auc"] is None
    assert monthly["recall"] == pytest.approx(3 / 4)
    below_12 = labelled[("tenure", "<12")]
    assert below_12["roc_auc"] == pytest.approx(1.0)
    assert below_12["precision"] == pytest.approx(1.0)
    assert labelled[("tenure", ">=48")]["f1"] == 0.0


def test_slices_refuse_a_frame_of_another_length() -> None:
    with pytest.raises(ValueError, match="rows"):
        slice_metrics(pl.DataFrame({"a": [1, 2]}), np.array([0, 1, 1]), np.array([0.1, 0.2, 0.3]), 0.5, {})


def test_bootstrap_of_identical_predictions_is_exactly_zero() -> None:
    y, p = _scores(500, seed=1)
    result = bootstrap_difference(y, p, p.copy())
    assert result == {"difference": 0.0, "low": 0.0, "high": 0.0, "resamples": 200.0}


def test_bootstrap_interval_excludes_zero_for_a_clearly_better_model() -> None:
    y, strong = _scores(1_500, seed=2, signal=1.5)
    weak = np.round(np.clip(strong + np.random.default_rng(9).normal(0, 0.3, y.size), 0, 1), 2)
    start = time.perf_counter()
    result = bootstrap_difference(y, strong, weak, resamples=200, seed=0)
    assert time.perf_counter() - start < 0.5
    assert result["difference"] == pytest.approx(roc_auc_score(y, strong) - roc_auc_score(y, weak))
    assert 0.0 < result["low"] < result["difference"] < result["high"]
    assert bootstrap_difference(y, weak, strong)["high"] < 0.0


@pytest.mark.parametrize("metric", ["roc_auc", "pr_auc", "brier"])
def test_bootstrap_is_deterministic_and_skips_single_class_resamples(metric: str) -> None:
    y = np.array([1, 0, 0, 0, 0, 0])  # one churner: about a third of resamples miss it
    a = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    b = np.array([0.2, 0.1, 0.8, 0.3, 0.4, 0.5])
    first = bootstrap_difference(y, a, b, metric=metric, resamples=300, seed=5)  # type: ignore[arg-type]
    assert first == bootstrap_difference(y, a, b, metric=metric, resamples=300, seed=5)  # type: ignore[arg-type]
    assert 100 < first["resamples"] < 300
    assert first["low"] <= first["difference"] <= first["high"]


def test_plots_are_written_as_png_files(tmp_path: Path) -> None:
    y, p = _scores(300, seed=6)
    importance = {f"feature_{i}": float(i) for i in range(30)}
    paths = save_plots(y, p, 0.5, importance, tmp_path / "plots")
    names = ["roc.png", "pr.png", "calibration.png", "confusion_matrix.png", "feature_importance.png"]
    assert [path.name for path in paths] == names
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 1_000


def _card_info(**overrides: object) -> ModelCardInfo:
    fields: dict[str, object] = {
        "model_name": "churn-lightgbm",
        "version": "3",
        "dataset": "telco",
        "data_version": "v-20240101-abc",
        "data_hash": "abc123def",
        "spec_name": "telco",
        "spec_digest": "d1g3st",
        "rows": {"train": 4930, "valid": 1056, "test": 1057},
        "metrics": {"roc_auc": 0.84567, "pr_auc": 0.65432, "n": 1057.0},
        "baseline_metrics": {"roc_auc": 0.83012, "pr_auc": 0.63001, "n": 1057.0},
        "slices": [
            {"slice": "contract", "value": "monthly", "n": 580, "positive_rate": 0.43, "roc_auc": 0.71}
            | {"precision": 0.5, "recall": 0.8, "f1": 0.6154},
            {"slice": "contract", "value": "two_year", "n": 12, "positive_rate": 0.0, "roc_auc": None}
            | {"precision": 0.0, "recall": 0.0, "f1": 0.0},
        ],
        "threshold": 0.3125,
        "threshold_rule": "f1",
        "params": {"learning_rate": 1e-05, "num_leaves": 31},
        "created_at": "2024-01-02T03:04:05Z",
    }
    return ModelCardInfo(**{**fields, **overrides})  # type: ignore[arg-type]


def test_model_card_states_sections_metrics_and_lineage() -> None:
    card = model_card(_card_info())
    headings = ["Model details", "Intended use", "Data", "Candidates", "Metrics", "Threshold", "Slices"]
    headings.append("Limitations")
    assert card.startswith("# Model card: churn-lightgbm\n")
    assert [line[3:] for line in card.splitlines() if line.startswith("## ")] == headings
    for text in ("0.8457", "0.8301", "+0.0156", "0.6543", "0.3125", "abc123def", "d1g3st", "train 4,930"):
        assert text in card
    assert "| roc_auc | 0.8457 | 0.8301 | +0.0156 |" in card
    assert "| contract | two_year | 12 | 0.0000 | n/a |" in card
    assert "`num_leaves`: 31" in card
    assert "`learning_rate`: 1e-05" in card
    assert "not for" in card.lower() or "not meant for" in card.lower()


def test_model_card_lists_every_candidate_and_marks_the_registered_one() -> None:
    figures = {"roc_auc": 0.86, "pr_auc": 0.66, "expected_value": 13170.0}
    candidates = [
        {"kind": "lightgbm", "selected": False, "valid": figures, "test": {"roc_auc": 0.8681}},
        {
            "kind": "logistic_regression",
            "selected": True,
            "valid": figures | {"roc_auc": 0.87},
            "test": {"roc_auc": 0.8691},
        },
    ]
    card = model_card(_card_info(model_kind="logistic_regression", candidates=candidates))
    assert "- Kind: logistic regression" in card
    assert "| LightGBM | 0.8600 | 0.6600 | 13,170 | 0.8681 | - |  |" in card
    assert "| logistic regression | 0.8700 | 0.6600 | 13,170 | 0.8691 | - | yes |" in card
    assert "| Metric | Model | Other candidate (LightGBM) | Difference |" in card


def test_model_card_marks_an_unregistered_model_and_missing_slices() -> None:
    card = model_card(_card_info(version=None, slices=[], params={}))
    assert "Version: not registered" in card
    assert "No slices were evaluated." in card
