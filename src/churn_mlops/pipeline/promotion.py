"""Promotion, manual promotion and rollback of the champion, each recorded on the version."""

from __future__ import annotations

import numpy as np
import polars as pl

from churn_mlops.errors import ChurnError, GateError
from churn_mlops.models.catalog import VersionInfo
from churn_mlops.models.evaluation import bootstrap_difference
from churn_mlops.models.gate import Decision, GatePolicy, decide, failed_floors
from churn_mlops.models.registry import Registry
from churn_mlops.settings import Settings

GATE = "gate"


def policy(settings: Settings) -> GatePolicy:
    """The gate's policy from settings."""
    config = settings.registry
    return GatePolicy(config.floors, config.min_improvement, config.max_regression)


def gate_new_version(
    registry: Registry,
    version: VersionInfo,
    test_frame: pl.DataFrame,
    labels: np.ndarray,
    probabilities: np.ndarray,
    settings: Settings,
) -> Decision:
    """Compare a new version with the champion on the same held-out rows; promote if it wins."""
    champion = registry.champion()
    comparison = None
    if champion is not None:
        try:
            _, predictor = registry.load(champion.version)
        except ChurnError as exc:
            decision = Decision(False, f"champion v{champion.version} cannot be scored: {exc}", {})
            _record(registry, version.version, decision, settings, actor=GATE)
            return decision
        comparison = bootstrap_difference(
            labels,
            probabilities,
            predictor.predict_proba(test_frame),
            resamples=settings.registry.bootstrap_resamples,
            seed=settings.training.seed,
        )
    decision = decide(version.metrics, comparison, policy(settings), champion.version if champion else None)
    if decision.promote:
        _crown(registry, version.version)
    _record(registry, version.version, decision, settings, actor=GATE)
    return decision


def promote(
    registry: Registry, reference: str, settings: Settings, *, actor: str, force: bool = False
) -> Decision:
    """Make a version champion by hand; the floors still apply unless forced."""
    version = registry.resolve(reference)
    current = registry.champion()
    if current is not None and current.version == version.version:
        raise GateError(f"version {version.version} is already the champion")
    misses = failed_floors(version.metrics, settings.registry.floors)
    if misses and not force:
        raise GateError(
            f"version {version.version} is below the floor: {'; '.join(misses)} (--force overrides)"
        )
    reason = "promoted by hand" + (" despite: " + "; ".join(misses) if misses else "")
    decision = Decision(True, reason, {"metrics": version.metrics, "previous": current and current.version})
    _crown(registry, version.version)
    _record(registry, version.version, decision, settings, actor=actor)
    return decision


def rollback(registry: Registry, settings: Settings, *, actor: str) -> Decision:
    """Restore the previous champion."""
    history = registry.champion_history()
    current = registry.champion()
    if current is None or len(history) < 2:
        raise GateError("there is no previous champion to roll back to")
    previous = history[-2]
    registry.resolve(previous)
    registry.set_champion(previous, history[:-1])
    decision = Decision(
        True, f"rolled back from v{current.version} to v{previous}", {"from": current.version}
    )
    _record(registry, previous, decision, settings, actor=actor, action="rolled back to")
    return decision


def _crown(registry: Registry, version: str) -> None:
    history = [v for v in registry.champion_history() if v != version]
    registry.set_champion(version, [*history, version])


def _record(
    registry: Registry,
    version: str,
    decision: Decision,
    settings: Settings,
    *,
    actor: str,
    action: str | None = None,
) -> None:
    outcome = action or ("promoted" if decision.promote else "rejected")
    record = {"action": outcome, "by": actor, "reason": decision.reason, **decision.checks}
    registry.record(version, record, settings.audit_log)
