"""Alert rules over window metrics: which windows fire, which resolve, stored once per window.

A window breaches a rule when the rule's condition holds for it and for the `windows - 1`
windows before it. A breaching window fires unless a later window has cleared (its metric is
known and the condition no longer holds): then the problem is over and its alert is resolved.
So the open alerts of a rule are always the breaches since it last cleared.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from churn_mlops.monitoring import tables
from churn_mlops.monitoring.store import MonitorStore
from churn_mlops.monitoring.tables import now_text
from churn_mlops.monitoring.webhooks import Notification, WebhookSender
from churn_mlops.monitoring.windows import window_metrics
from churn_mlops.settings import AlertRule, Settings

logger = logging.getLogger(__name__)
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Series:
    """One rule's metric over the windows of one kind and model version, oldest first."""

    kind: str
    model_version: str
    starts: Sequence[str]
    values: Sequence[float | None]


def decide(rule: AlertRule, values: Sequence[float | None]) -> list[str | None]:
    """For each window: "firing", "resolved" (breached, then cleared later) or None (no breach)."""
    holds = [v is not None and COMPARE[rule.op](v, rule.threshold) for v in values]
    cleared = [i for i, v in enumerate(values) if v is not None and not holds[i]]
    last_clear = cleared[-1] if cleared else -1
    states: list[str | None] = []
    for i in range(len(values)):
        breach = i + 1 >= rule.windows and all(holds[i + 1 - rule.windows : i + 1])
        states.append(None if not breach else "firing" if i > last_clear else "resolved")
    return states


def apply(connection: sa.Connection, rule: AlertRule, series: Series) -> list[dict[str, Any]]:
    """Store the rule's alerts for a series; return those whose state changed."""
    a = tables.alerts
    key = (a.c.rule == rule.name, a.c.kind == series.kind, a.c.model_version == series.model_version)
    stored = {r.window_start: r for r in connection.execute(sa.select(a).where(*key))}
    changed = []
    states = decide(rule, series.values)
    for start, value, state in zip(series.starts, series.values, states, strict=True):
        old = stored.pop(start, None)
        if state is None:
            if old is not None and old.state == "firing":
                changed.append(_resolve(connection, old.id))
            continue
        if old is None:
            changed.append(_insert(connection, rule, series, start, value, state))
        elif old.state != state:
            changed.append(_set_state(connection, old.id, state, value))
    for old in stored.values():  # windows no longer computed, or a global rule's old key
        if old.state == "firing" and series.kind != "global":
            changed.append(_resolve(connection, old.id))
    return changed


def message(rule: AlertRule, value: float | None, kind: str, start: str, version: str) -> str:
    """One line saying what breached, where."""
    where = "now" if kind == "global" else f"the {kind} window of {start}"
    shown = "n/a" if value is None else f"{value:.4g}"
    return f"{rule.metric} = {shown} {rule.op} {rule.threshold:g} in {where} (model {version})"


def _insert(
    connection: sa.Connection, rule: AlertRule, series: Series, start: str, value: float | None, state: str
) -> dict[str, Any]:
    now = now_text()
    row = {
        "rule": rule.name,
        "kind": series.kind,
        "window_start": start,
        "model_version": series.model_version,
        "severity": rule.severity,
        "state": state,
        "value": value,
        "threshold": rule.threshold,
        "message": message(rule, value, series.kind, start, series.model_version),
        "fired_at": now,
        "resolved_at": now if state == "resolved" else None,
        "notified": None,
    }
    new_id = connection.execute(tables.alerts.insert().values(**row)).inserted_primary_key
    if state == "firing":
        logger.info("alert %s (%s): %s", rule.name, rule.severity, row["message"])
    return {"id": new_id[0] if new_id else None, **row}


def _resolve(connection: sa.Connection, alert_id: int) -> dict[str, Any]:
    return _set_state(connection, alert_id, "resolved", None)


def _set_state(connection: sa.Connection, alert_id: int, state: str, value: float | None) -> dict[str, Any]:
    a = tables.alerts
    values: dict[str, Any] = {"state": state, "resolved_at": now_text() if state == "resolved" else None}
    if value is not None:
        values["value"] = value
    connection.execute(a.update().where(a.c.id == alert_id).values(**values))
    return dict(connection.execute(sa.select(a).where(a.c.id == alert_id)).one()._mapping)


def update_alerts(store: MonitorStore, settings: Settings, kind: str, now: datetime) -> list[dict[str, Any]]:
    """Evaluate every rule over the stored windows of `kind` and the global metrics; store changes."""
    series: dict[str, list[dict[str, Any]]] = {}
    for row in store.windows(kind):
        series.setdefault(row["model_version"], []).append(json.loads(row["result"]))
    global_values = {"hours_since_last_prediction": _hours_since_last_prediction(store, now)}
    changed = []
    with store.engine.begin() as connection:
        for rule in settings.monitoring.rules:
            if rule.metric in global_values:
                one = Series("global", "*", ["latest"], [global_values[rule.metric]])
                changed += apply(connection, rule, one)
                continue
            for version, results in series.items():
                values = [_metrics(r, settings.monitoring.min_window_rows).get(rule.metric) for r in results]
                starts = [r["start"] for r in results]
                changed += apply(connection, rule, Series(kind, version, starts, values))
    return changed


def _metrics(result: dict[str, Any], min_rows: int) -> dict[str, float | None]:
    """A window's metrics for the rules; none for a window too small to judge, so it neither fires
    nor clears (today's window just after midnight, a quiet day)."""
    return window_metrics(result) if result["predictions"] >= min_rows else {}


def _hours_since_last_prediction(store: MonitorStore, now: datetime) -> float | None:
    last = store.get_state(tables.LAST_PREDICTION)
    return None if last is None else (now - datetime.fromisoformat(last)).total_seconds() / 3600


def alert_json(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert as `churn monitor run --json` lists it."""
    return {
        "rule": alert["rule"],
        "severity": alert["severity"],
        "window": alert["window_start"],
        "kind": alert["kind"],
        "model_version": alert["model_version"],
        "message": alert["message"],
        "state": alert["state"],
        "value": alert["value"],
    }


def notify(store: MonitorStore, settings: Settings) -> dict[str, int]:
    """Send every alert whose state has not been delivered yet; a failure is retried next run."""
    monitoring = settings.monitoring
    urls = [url.get_secret_value() for url in monitoring.webhooks]
    a = tables.alerts
    pending = [r for r in store.alerts() if r["notified"] != r["state"]]
    sent = failed = 0
    with WebhookSender(
        urls, timeout=monitoring.webhook_timeout, retries=monitoring.webhook_retries
    ) as sender:
        for alert in pending:
            if not sender.send(_notification(alert)):
                failed += 1
                continue
            sent += 1
            with store.engine.begin() as connection:
                connection.execute(a.update().where(a.c.id == alert["id"]).values(notified=alert["state"]))
    return {"sent": sent if urls else 0, "failed": failed}


def _notification(alert: dict[str, Any]) -> Notification:
    return Notification(
        rule=alert["rule"],
        severity=alert["severity"],
        window=f"{alert['kind']} {alert['window_start']}",
        state=alert["state"],
        message=alert["message"],
        value=alert["value"],
        extra={"model_version": alert["model_version"], "threshold": alert["threshold"]},
    )
