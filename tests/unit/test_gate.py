"""The champion/challenger gate's decisions."""

from __future__ import annotations

from churn_mlops.models.gate import GatePolicy, decide

POLICY = GatePolicy(floors={"roc_auc": 0.75, "pr_auc": 0.4}, min_improvement=0.0, max_regression=0.01)
GOOD = {"roc_auc": 0.84, "pr_auc": 0.62}


def _comparison(difference: float, low: float, high: float) -> dict[str, float]:
    return {"difference": difference, "low": low, "high": high, "resamples": 200.0}


def test_first_model_above_the_floors_is_promoted() -> None:
    decision = decide(GOOD, None, POLICY)
    assert decision.promote
    assert "no champion" in decision.reason


def test_a_model_below_any_floor_is_never_promoted() -> None:
    for metrics in ({"roc_auc": 0.5, "pr_auc": 0.62}, {"roc_auc": 0.84, "pr_auc": 0.2}, {"roc_auc": 0.84}):
        decision = decide(metrics, None, POLICY)
        assert not decision.promote
        assert decision.reason.startswith("below the floor")
    assert not decide({"roc_auc": 0.5, "pr_auc": 0.2}, _comparison(0.2, 0.1, 0.3), POLICY, "1").promote


def test_an_equal_challenger_is_not_promoted() -> None:
    decision = decide(GOOD, _comparison(0.0, 0.0, 0.0), POLICY, "3")
    assert not decision.promote
    assert "not better than the champion" in decision.reason
    assert "v3" in decision.reason


def test_a_better_challenger_is_promoted() -> None:
    decision = decide(GOOD, _comparison(0.02, 0.005, 0.035), POLICY, "3")
    assert decision.promote
    assert decision.checks["comparison"]["difference"] == 0.02


def test_a_noisy_gain_that_could_be_a_loss_is_not_promoted() -> None:
    decision = decide(GOOD, _comparison(0.004, -0.03, 0.04), POLICY, "3")
    assert not decision.promote
    assert "could be worse" in decision.reason


def test_a_required_improvement_is_respected() -> None:
    strict = GatePolicy(floors={}, min_improvement=0.01, max_regression=0.01)
    assert not decide(GOOD, _comparison(0.005, 0.001, 0.01), strict, "1").promote
    assert decide(GOOD, _comparison(0.015, 0.001, 0.03), strict, "1").promote
