"""Which windows an alert rule fires on, and which of its breaches are already resolved."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from churn_mlops.monitoring.alerts import decide
from churn_mlops.settings import AlertRule, MonitoringSettings

F, R = "firing", "resolved"


def _rule(windows: int = 1, op: str = ">", threshold: float = 0.5) -> AlertRule:
    return AlertRule(name="drift", metric="drift.share", op=op, threshold=threshold, windows=windows)


@pytest.mark.parametrize(
    ("values", "states"),
    [
        ([0.6, 0.7, 0.2, 0.8, 0.9], [R, R, None, F, F]),
        ([0.1, 0.2, 0.3], [None, None, None]),
        ([0.9, 0.9, 0.9], [F, F, F]),
        ([0.9, 0.1, 0.9, 0.1], [R, None, R, None]),
        ([0.1, 0.9], [None, F]),
        ([], []),
    ],
)
def test_one_window_rules_fire_on_breaches_since_the_last_clear_window(
    values: list[float], states: list[str | None]
) -> None:
    assert decide(_rule(windows=1), values) == states


@pytest.mark.parametrize(
    ("values", "states"),
    [
        ([0.6, 0.2, 0.7, 0.8, 0.9], [None, None, None, F, F]),
        ([0.9, 0.1, 0.9, 0.1, 0.9], [None, None, None, None, None]),
        ([0.6, 0.7, 0.1, 0.8], [None, R, None, None]),
        ([0.6, 0.7, 0.8, 0.1, 0.2], [None, R, R, None, None]),
        ([0.9], [None]),
    ],
)
def test_two_window_rules_need_two_breaching_windows_in_a_row(
    values: list[float], states: list[str | None]
) -> None:
    assert decide(_rule(windows=2), values) == states


@pytest.mark.parametrize(
    ("windows", "values", "states"),
    [
        (1, [0.6, None, None], [F, None, None]),
        (1, [None, 0.6, None], [None, F, None]),
        (1, [0.6, 0.1, None], [R, None, None]),
        (1, [None, None], [None, None]),
        (2, [0.6, 0.7, None], [None, F, None]),
        (2, [0.6, 0.7, None, 0.1], [None, R, None, None]),
    ],
)
def test_unknown_values_neither_fire_nor_clear(
    windows: int, values: list[float | None], states: list[str | None]
) -> None:
    assert decide(_rule(windows=windows), values) == states


@pytest.mark.parametrize(
    ("op", "breaching"),
    [
        (">", {0.6}),
        (">=", {0.5, 0.6}),
        ("<", {0.4}),
        ("<=", {0.4, 0.5}),
    ],
)
@pytest.mark.parametrize("value", [0.4, 0.5, 0.6])
def test_operators_compare_the_metric_with_the_threshold(
    op: str, breaching: set[float], value: float
) -> None:
    assert decide(_rule(op=op, threshold=0.5), [value]) == [F if value in breaching else None]


def _by_definition(rule: AlertRule, values: list[float | None]) -> list[str | None]:
    """The documented rule, window by window: a breach fires unless a later known value clears."""
    above = rule.op in (">", ">=")
    strict = rule.op in (">", "<")

    def holds(v: float | None) -> bool:
        if v is None:
            return False
        if v == rule.threshold:
            return not strict
        return (v > rule.threshold) == above

    states: list[str | None] = []
    for i in range(len(values)):
        recent = values[max(0, i + 1 - rule.windows) : i + 1]
        if i + 1 < rule.windows or not all(holds(v) for v in recent):
            states.append(None)
            continue
        cleared_later = any(v is not None and not holds(v) for v in values[i + 1 :])
        states.append(R if cleared_later else F)
    return states


@pytest.mark.parametrize("seed", range(12))
def test_random_series_follow_the_documented_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rule = _rule(windows=int(rng.integers(1, 4)), op=str(rng.choice([">", ">=", "<", "<="])))
    draws = rng.choice([0.2, 0.5, 0.8, -1.0], size=int(rng.integers(1, 15)), p=[0.3, 0.2, 0.35, 0.15])
    values: list[float | None] = [None if v < 0 else float(v) for v in draws]
    assert decide(rule, values) == _by_definition(rule, values)


def test_a_rule_on_an_unknown_metric_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="is not a monitoring metric"):
        AlertRule(name="typo", metric="drift.shares", threshold=0.1)
    assert AlertRule(name="ok", metric="drift.features.contract.psi", threshold=0.1).metric


def test_rule_names_are_unique() -> None:
    rule = AlertRule(name="same", metric="drift.share", threshold=0.1)
    with pytest.raises(ValidationError, match="must be unique"):
        MonitoringSettings(rules=[rule, rule])
