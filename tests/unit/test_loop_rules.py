"""The closed loop's retraining rules over hand-built evidence, and the run's JSON document."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from churn_mlops.loop.job import LoopResult
from churn_mlops.loop.rules import Evidence, Rule, decide
from churn_mlops.settings import LoopSettings

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SETTINGS = LoopSettings(drift_share=0.2, auc_drop=0.05, max_model_age_days=30, min_new_labels=100)


def window(
    start: str,
    *,
    predictions: int = 1000,
    share: float | None = 0.0,
    realised: float | None = None,
    estimated: float | None = None,
    coverage: float | None = None,
) -> dict[str, Any]:
    """A complete daily window result as the monitoring job stores it."""
    return {
        "start": start,
        "complete": True,
        "predictions": predictions,
        "drift": {"share": share, "drifted_features": ["contract", "tenure"] if share else []},
        "performance": {
            "realised": {"roc_auc": realised} if realised is not None else None,
            "estimated": {"roc_auc": estimated} if estimated is not None else None,
            "coverage": coverage,
        },
    }


def evidence(**changes: Any) -> Evidence:
    """Evidence on which no rule fires, with `changes` applied."""
    fields: dict[str, Any] = {
        "champion": "3",
        "trained_at": NOW - timedelta(days=2),
        "test_roc_auc": 0.85,
        "windows": [window("2026-12-06", estimated=0.84)],
        "new_labels": 0,
        "min_window_rows": 500,
    }
    return Evidence(**{**fields, **changes})


def rule(name: str, found: Evidence, now: datetime = NOW) -> Rule:
    """One rule's verdict from `decide`."""
    return {r.name: r for r in decide(found, SETTINGS, now)}[name]


def test_decide_gives_every_rule_a_verdict_and_none_fires_on_quiet_evidence() -> None:
    rules = decide(evidence(), SETTINGS, NOW)
    assert [r.name for r in rules] == ["drift_share", "auc_drop", "model_age_days", "new_labels"]
    assert not any(r.fired for r in rules)


def test_drift_reads_the_latest_window_with_enough_predictions() -> None:
    windows = [window("2026-12-05", share=0.5), window("2026-12-06", predictions=40, share=0.0)]
    verdict = rule("drift_share", evidence(windows=windows))
    assert verdict.fired
    assert verdict.value == 0.5
    assert "2026-12-05" in verdict.detail
    assert "contract" in verdict.detail


def test_a_tiny_drifted_latest_window_does_not_fire() -> None:
    windows = [window("2026-12-05", share=0.0), window("2026-12-06", predictions=499, share=0.9)]
    verdict = rule("drift_share", evidence(windows=windows))
    assert not verdict.fired
    assert verdict.value == 0.0
    assert "2026-12-05" in verdict.detail


@pytest.mark.parametrize(("share", "fired"), [(0.19, False), (0.2, True), (0.6, True)])
def test_drift_fires_at_and_above_the_threshold_only(share: float, fired: bool) -> None:
    verdict = rule("drift_share", evidence(windows=[window("2026-12-06", share=share)]))
    assert verdict.fired is fired
    assert verdict.threshold == 0.2


@pytest.mark.parametrize("windows", [[], [window("2026-12-06", predictions=10, share=1.0)]])
def test_drift_without_a_window_to_judge_does_not_fire(windows: list[dict[str, Any]]) -> None:
    verdict = rule("drift_share", evidence(windows=windows))
    assert not verdict.fired
    assert verdict.value is None
    assert "no complete window" in verdict.detail


@pytest.mark.parametrize("coverage", [0.5, 0.9])
def test_auc_uses_the_realised_figure_once_half_the_predictions_are_labelled(coverage: float) -> None:
    latest = window("2026-12-06", realised=0.70, estimated=0.84, coverage=coverage)
    verdict = rule("auc_drop", evidence(windows=[latest]))
    assert verdict.fired
    assert verdict.value == pytest.approx(0.15)
    assert verdict.detail.startswith("realised ROC AUC 0.700")


@pytest.mark.parametrize("coverage", [0.49, None])
def test_auc_uses_the_estimate_while_few_predictions_are_labelled(coverage: float | None) -> None:
    latest = window("2026-12-06", realised=0.70, estimated=0.84, coverage=coverage)
    verdict = rule("auc_drop", evidence(windows=[latest]))
    assert not verdict.fired
    assert verdict.value == pytest.approx(0.01)
    assert verdict.detail.startswith("estimated ROC AUC 0.840")


def test_auc_skips_windows_without_a_figure_and_tiny_ones() -> None:
    windows = [
        window("2026-12-05", estimated=0.79),
        window("2026-12-06"),
        window("2026-12-07", predictions=3, estimated=0.85),
    ]
    verdict = rule("auc_drop", evidence(windows=windows))
    assert verdict.fired
    assert verdict.value == pytest.approx(0.06)
    assert "2026-12-05" in verdict.detail


def test_auc_fires_at_exactly_the_drop_threshold() -> None:
    verdict = rule("auc_drop", evidence(windows=[window("2026-12-06", estimated=0.80)]))
    assert verdict.value == 0.05
    assert verdict.fired


def test_auc_without_a_test_figure_does_not_fire() -> None:
    latest = window("2026-12-06", realised=0.30, coverage=1.0)
    verdict = rule("auc_drop", evidence(test_roc_auc=None, windows=[latest]))
    assert not verdict.fired
    assert verdict.value is None
    assert "no test ROC AUC" in verdict.detail


@pytest.mark.parametrize(("age_days", "fired"), [(29.9, False), (30, True), (45, True)])
def test_age_counts_days_since_registration_against_now(age_days: float, fired: bool) -> None:
    trained_at = NOW - timedelta(days=age_days)
    verdict = rule("model_age_days", evidence(trained_at=trained_at))
    assert verdict.fired is fired
    assert verdict.value == pytest.approx(age_days)
    later = rule("model_age_days", evidence(trained_at=trained_at), now=NOW + timedelta(days=1))
    assert later.fired  # the same champion ages with `now`


@pytest.mark.parametrize(("new_labels", "fired"), [(0, False), (99, False), (100, True)])
def test_new_labels_fire_from_min_new_labels(new_labels: int, fired: bool) -> None:
    verdict = rule("new_labels", evidence(new_labels=new_labels))
    assert verdict.fired is fired
    assert verdict.value == new_labels
    assert f"{new_labels} outcomes arrived" in verdict.detail


def test_loop_result_json_has_what_the_cli_promises() -> None:
    rules = decide(evidence(new_labels=500), SETTINGS, NOW)
    result = LoopResult("3", rules, False, {"predictions_read": 0}, "promoted", "better", "4", "abc123")
    document = json.loads(json.dumps(result.to_json()))
    assert document["retrain"] is True
    assert document["fired"] == ["new_labels"]
    assert document["outcome"] == "promoted"
    assert document["reason"] == "better"
    assert document["version"] == "4"
    assert document["data_version"] == "abc123"
    assert [r["rule"] for r in document["rules"]] == [r.name for r in rules]


def test_loop_result_without_a_fired_rule_does_not_retrain() -> None:
    document = LoopResult("3", decide(evidence(), SETTINGS, NOW), True, {}).to_json()
    assert document["retrain"] is False
    assert document["fired"] == []
    assert document["outcome"] == "kept"
    assert document["version"] is None
