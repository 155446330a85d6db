"""The guard rules that stop a canary by themselves, judged on a server's own counts."""

from __future__ import annotations

import numpy as np

from churn_mlops.serving.rollout import Canary
from churn_mlops.settings import RolloutSettings

GUARDS = RolloutSettings(min_requests=50, max_error_rate=0.02, max_p99_ms=250.0, max_score_psi=0.25)


def _canary() -> Canary:
    return Canary(model=None, fraction=0.2)  # type: ignore[arg-type]  # the guards never touch the model


def _answer(
    canary: Canary, rng: np.random.Generator, n: int, *, shift: float = 0.0, seconds: float = 0.002
) -> None:
    for _ in range(n):
        canary.observe(False, rng.beta(2, 5, 4))  # the champion answers four customers for each canary one
        canary.observe(True, np.clip(rng.beta(2, 5, 1) + shift, 0, 1), seconds)


def test_no_verdict_before_enough_answers() -> None:
    canary = _canary()
    canary.fail(10)  # every one failed, but ten prove little
    assert canary.verdict(GUARDS) is None


def test_too_many_failed_scorings_stop_the_canary() -> None:
    canary, rng = _canary(), np.random.default_rng(0)
    _answer(canary, rng, 98)
    canary.fail(2)
    assert canary.verdict(GUARDS) is None  # 2% is the limit, not over it
    canary.fail(1)
    assert "3 of 101 canary scorings failed" in str(canary.verdict(GUARDS))


def test_a_slow_canary_is_stopped() -> None:
    canary, rng = _canary(), np.random.default_rng(1)
    _answer(canary, rng, 60, seconds=0.4)
    assert "p99 400 ms" in str(canary.verdict(GUARDS))


def test_the_same_scores_in_a_small_sample_are_not_called_drift() -> None:
    for seed in range(20):  # a canary scoring as the champion does never trips on noise
        canary = _canary()
        _answer(canary, np.random.default_rng(seed), 60)
        assert canary.verdict(GUARDS) is None, seed


def test_shifted_scores_stop_the_canary() -> None:
    canary = _canary()
    _answer(canary, np.random.default_rng(2), 500, shift=0.35)
    assert "canary scores drifted from the champion's" in str(canary.verdict(GUARDS))


def _realised(labelled: int, roc_auc: float | None) -> dict[str, object]:
    return {"version": "x", "labelled": labelled, "roc_auc": roc_auc}


def test_the_realised_guard_waits_for_enough_outcomes_of_both_classes_then_judges_the_gap() -> None:
    from churn_mlops.monitoring.canary import realised_verdict

    guards = RolloutSettings(min_labels=100, max_auc_drop=0.05)
    assert realised_verdict(_realised(500, 0.85), _realised(99, 0.50), guards) is None  # too few yet
    assert realised_verdict(_realised(500, 0.85), _realised(100, None), guards) is None  # one class only
    assert realised_verdict(_realised(500, 0.85), _realised(100, 0.80), guards) is None  # within the limit
    assert realised_verdict(_realised(500, 0.80), _realised(100, 0.90), guards) is None  # better
    reason = realised_verdict(_realised(500, 0.85), _realised(100, 0.79), guards)
    assert reason is not None
    assert "0.790" in reason
    assert "0.850" in reason
