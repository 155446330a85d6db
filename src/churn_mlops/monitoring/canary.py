"""The canary's realised guard: its ROC AUC on the customers it answered whose outcomes arrived,
against the champion's on theirs, judged by every monitoring run.

The serving guards (failed share, latency, score drift) judge a canary within seconds; outcomes
arrive days later, so this one runs where the labels are joined, and ends the canary the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from churn_mlops.models.economics import BusinessCosts
from churn_mlops.monitoring.performance import metrics, realised_counts
from churn_mlops.monitoring.store import MonitorStore
from churn_mlops.monitoring.windows import DAY_MS
from churn_mlops.serving.rollout.state import CANARY, active_rollout, roll_back
from churn_mlops.settings import RolloutSettings, Settings


def judge_canary(store: MonitorStore, settings: Settings, now: datetime) -> dict[str, Any] | None:
    """Each model's realised ROC AUC since the canary started, rolling the canary back when it
    trails the champion by more than `rollout.max_auc_drop`; None when no canary is running."""
    with store.engine.connect() as connection:
        rollout = active_rollout(connection)
    if rollout is None or rollout.mode != CANARY:
        return None
    models = {
        name: realised(store, settings, version, rollout.started_at, now)
        for name, version in (("champion", rollout.champion_version), ("challenger", rollout.model_version))
    }
    reason = realised_verdict(models["champion"], models["challenger"], settings.rollout)
    rolled_back = reason is not None and roll_back(store.engine, rollout.id, rollout.model_version, reason)
    verdict = reason if rolled_back else None
    return {"version": rollout.model_version, "models": models, "rolled_back": verdict}


def realised(
    store: MonitorStore, settings: Settings, version: str, started_at: str, until: datetime
) -> dict[str, Any]:
    """A version's labelled customers and realised ROC AUC on its answers from `started_at` to `until`."""
    monitoring = settings.monitoring
    start_ms = int(datetime.fromisoformat(started_at).timestamp() * 1000)
    horizon_ms = int(monitoring.label_horizon_days * DAY_MS)
    batches = store.outcomes.labelled(
        version, start_ms, int(until.timestamp() * 1000), horizon_ms, monitoring.chunk_rows
    )
    counts = realised_counts((b.probabilities, b.decisions, b.outcomes) for b in batches)
    training = settings.training
    found = metrics(counts, BusinessCosts(training.offer_cost, training.saved_value, training.success_rate))
    return {
        "version": version,
        "labelled": int(counts.total),
        "roc_auc": found["roc_auc"] if found else None,
    }


def realised_verdict(
    champion: dict[str, Any], challenger: dict[str, Any], guards: RolloutSettings
) -> str | None:
    """Why the canary must stop, or None: judged once both models have `min_labels` outcomes."""
    if min(champion["labelled"], challenger["labelled"]) < guards.min_labels:
        return None
    if champion["roc_auc"] is None or challenger["roc_auc"] is None:
        return None  # one class only so far: no ROC AUC to compare
    drop = champion["roc_auc"] - challenger["roc_auc"]
    if drop <= guards.max_auc_drop:
        return None
    return (
        f"realised ROC AUC {challenger['roc_auc']:.3f} on {challenger['labelled']} labelled customers, "
        f"{drop:.3f} below the champion's {champion['roc_auc']:.3f} (limit {guards.max_auc_drop})"
    )
