"""When to retrain: the loop's rules over the stored monitoring results (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from churn_mlops.settings import LoopSettings

REALISED_COVERAGE = 0.5  # below this share of labelled predictions, trust the estimate instead


@dataclass(frozen=True)
class Evidence:
    """What the rules look at, read from the monitoring store and the registry."""

    champion: str
    trained_at: datetime
    test_roc_auc: float | None
    windows: list[dict[str, Any]]  # the champion's complete daily window results, oldest first
    new_labels: int  # outcomes stored since the champion was registered
    min_window_rows: int


@dataclass(frozen=True)
class Rule:
    """One retraining rule's verdict."""

    name: str
    fired: bool
    value: float | None
    threshold: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "rule": self.name,
            "fired": self.fired,
            "value": self.value,
            "threshold": self.threshold,
            "detail": self.detail,
        }


def decide(evidence: Evidence, settings: LoopSettings, now: datetime) -> list[Rule]:
    """Every rule's verdict; the loop retrains when any fired."""
    return [
        _drift(evidence, settings),
        _auc_drop(evidence, settings),
        _age(evidence, settings, now),
        _new_labels(evidence, settings),
    ]


def _judged(evidence: Evidence) -> list[dict[str, Any]]:
    """Windows big enough to judge: a few predictions just after midnight prove nothing."""
    return [w for w in evidence.windows if w["predictions"] >= evidence.min_window_rows]


def _drift(evidence: Evidence, settings: LoopSettings) -> Rule:
    latest = next((w for w in reversed(_judged(evidence)) if w["drift"]["share"] is not None), None)
    if latest is None:
        return Rule("drift_share", False, None, settings.drift_share, "no complete window to judge yet")
    share = float(latest["drift"]["share"])
    drifted = ", ".join(latest["drift"].get("drifted_features", [])[:5]) or "none"
    detail = f"{share:.0%} of features drifted on {latest['start']} ({drifted})"
    return Rule("drift_share", share >= settings.drift_share, share, settings.drift_share, detail)


def _auc_drop(evidence: Evidence, settings: LoopSettings) -> Rule:
    if evidence.test_roc_auc is None:
        return Rule("auc_drop", False, None, settings.auc_drop, "the champion has no test ROC AUC")
    for window in reversed(_judged(evidence)):
        performance = window["performance"]
        realised = (performance.get("realised") or {}).get("roc_auc")
        labelled = realised is not None and (performance.get("coverage") or 0.0) >= REALISED_COVERAGE
        source = "realised" if labelled else "estimated"
        auc = realised if labelled else (performance.get("estimated") or {}).get("roc_auc")
        if auc is None:
            continue
        drop = round(evidence.test_roc_auc - float(auc), 6)  # 0.85 - 0.80 is 0.0499..., not below 0.05
        detail = (
            f"{source} ROC AUC {auc:.3f} on {window['start']} against {evidence.test_roc_auc:.3f} on test"
        )
        return Rule("auc_drop", drop >= settings.auc_drop, drop, settings.auc_drop, detail)
    return Rule("auc_drop", False, None, settings.auc_drop, "no window with a ROC AUC yet")


def _age(evidence: Evidence, settings: LoopSettings, now: datetime) -> Rule:
    days = (now - evidence.trained_at).total_seconds() / 86_400
    detail = f"version {evidence.champion} was registered {days:.1f} days ago"
    return Rule(
        "model_age_days",
        days >= settings.max_model_age_days,
        round(days, 3),
        settings.max_model_age_days,
        detail,
    )


def _new_labels(evidence: Evidence, settings: LoopSettings) -> Rule:
    detail = f"{evidence.new_labels} outcomes arrived since version {evidence.champion} was registered"
    threshold = float(settings.min_new_labels)
    return Rule("new_labels", evidence.new_labels >= threshold, float(evidence.new_labels), threshold, detail)
