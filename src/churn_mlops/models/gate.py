"""The champion/challenger gate: promote a challenger only if it is good enough and not worse.

Pure decisions from metrics and paired predictions; the registry records what was decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GatePolicy:
    """Absolute floors, and how a challenger must compare with the champion on the same rows."""

    floors: Mapping[str, float] = field(default_factory=lambda: {"roc_auc": 0.75})
    min_improvement: float = 0.0
    max_regression: float = 0.01


@dataclass(frozen=True)
class Decision:
    """What the gate decided and why, with the figures it looked at."""

    promote: bool
    reason: str
    checks: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return asdict(self)


def failed_floors(metrics: Mapping[str, float], floors: Mapping[str, float]) -> list[str]:
    """Human-readable descriptions of every floor the metrics miss."""
    return [
        f"{name} {metrics.get(name, float('nan')):.4f} < floor {floor}"
        for name, floor in floors.items()
        if not metrics.get(name, float("-inf")) >= floor
    ]


def decide(
    metrics: Mapping[str, float],
    comparison: Mapping[str, float] | None,
    policy: GatePolicy,
    champion: str | None = None,
) -> Decision:
    """Promote when every floor holds and, if a champion exists, the challenger beats it.

    `comparison` is a paired bootstrap of challenger minus champion ROC AUC on the challenger's
    held-out rows: its point `difference` must exceed `min_improvement`, and its lower bound
    must not reach below `-max_regression`.
    """
    checks: dict[str, Any] = {"metrics": dict(metrics), "floors": dict(policy.floors), "champion": champion}
    misses = failed_floors(metrics, policy.floors)
    if misses:
        return Decision(False, "below the floor: " + "; ".join(misses), checks)
    if comparison is None:
        return Decision(True, "passes every floor and there is no champion yet", checks)
    checks["comparison"] = dict(comparison)
    gain, low = comparison["difference"], comparison["low"]
    summary = f"ROC AUC {gain:+.4f} vs champion v{champion} (95% CI {low:+.4f} to {comparison['high']:+.4f})"
    if gain <= policy.min_improvement:
        return Decision(False, f"not better than the champion: {summary}", checks)
    if low < -policy.max_regression:
        return Decision(False, f"could be worse than the champion: {summary}", checks)
    return Decision(True, f"better than the champion: {summary}", checks)
