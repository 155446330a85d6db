"""Rollouts as a user runs them: start a shadow, see how it compares, stop it; each step audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from churn_mlops import migrations
from churn_mlops.errors import ConfigError, NotFoundError
from churn_mlops.models.catalog import CHAMPION, catalog_for
from churn_mlops.serving.predlog import predictions_table
from churn_mlops.serving.rollout import (
    CANARY,
    SHADOW,
    active_rollout,
    rollout_counts,
    rollouts,
    shadow_predictions,
)
from churn_mlops.serving.traffic import traffic
from churn_mlops.settings import Settings
from churn_mlops.sql import create_engine


def start_rollout(
    settings: Settings, *, mode: str = SHADOW, model: str = "challenger", fraction: float = 0.1, actor: str
) -> dict[str, Any]:
    """Start a shadow of, or a canary beside, the champion with `model` (a version or alias);
    every server follows within seconds."""
    if mode not in (SHADOW, CANARY):
        raise ConfigError(f"--mode {mode!r}: choose shadow or canary")
    if mode == CANARY and not 0 < fraction < 1:
        raise ConfigError(f"--fraction {fraction}: a canary takes a share between 0 and 1 (e.g. 0.1)")
    catalog = catalog_for(settings)
    candidate, champion = catalog.resolve(model), catalog.resolve(CHAMPION)
    if candidate.version == champion.version:
        raise ConfigError(f"version {candidate.version} is the champion: shadow another version")
    with _engine(settings) as engine, engine.begin() as connection:
        running = active_rollout(connection)
        if running is not None:
            what = f"a {running.mode} of version {running.model_version}"
            raise ConfigError(f"{what} is running: `churn rollout stop` it first")
        row = {
            "mode": mode,
            "model_version": candidate.version,
            "champion_version": champion.version,
            "fraction": fraction if mode == CANARY else 0.0,
            "started_at": _now(),
            "started_by": actor,
        }
        connection.execute(rollouts.insert().values(**row))
    _audit(settings, {"action": "rollout started", "by": actor, "version": candidate.version, "mode": mode})
    return {**row, "poll_seconds": 2.0}


def stop_rollout(
    settings: Settings, *, actor: str, reason: str = "stopped by hand", outcome: str = "stopped"
) -> dict[str, Any]:
    """End the rollout in force; all traffic goes back to the champion."""
    with _engine(settings) as engine, engine.begin() as connection:
        running = active_rollout(connection)
        if running is None:
            raise NotFoundError("no rollout is running")
        ended = {"ended_at": _now(), "ended_by": actor, "outcome": outcome, "reason": reason}
        connection.execute(rollouts.update().where(rollouts.c.id == running.id).values(**ended))
    record = {"action": f"rollout {outcome}", "by": actor, "version": running.model_version, "reason": reason}
    _audit(settings, record)
    return {"mode": running.mode, "model_version": running.model_version, **ended}


def promote_rollout(settings: Settings, *, actor: str) -> dict[str, Any]:
    """Make the rollout's model the champion (the gate's floors apply) and end the rollout."""
    from churn_mlops.models.registry import Registry
    from churn_mlops.pipeline.promotion import promote

    with _engine(settings) as engine, engine.connect() as connection:
        running = active_rollout(connection)
    if running is None:
        raise NotFoundError("no rollout is running")
    decision = promote(Registry.from_settings(settings), running.model_version, settings, actor=actor)
    return stop_rollout(settings, actor=actor, reason=decision.reason, outcome="promoted")


def rollout_status(settings: Settings) -> dict[str, Any]:
    """The rollout in force (or the last one) and how its model compares with the champion so far."""
    r = rollouts
    with _engine(settings) as engine, engine.connect() as connection:
        last = connection.execute(sa.select(r).order_by(r.c.id.desc()).limit(1)).first()
        if last is None:
            return {"running": False, "rollout": None, "models": {}}
        rollout = dict(last._mapping)
        read = _canary_models if rollout["mode"] == CANARY else _shadow_models
        models = read(connection, rollout)
        c = rollout_counts
        counted = connection.execute(
            sa.select(sa.func.sum(c.c.answered), sa.func.sum(c.c.failed), sa.func.sum(c.c.agreed)).where(
                c.c.rollout_id == rollout["id"]
            )
        ).one()
        models["challenger"]["errors"] = int(counted[1] or 0)  # scorings that failed (the champion answered)
        if rollout["mode"] == CANARY:  # the champion's decision on the canary's customers, taken beside it
            models["challenger"]["agreement"] = (counted[2] or 0) / counted[0] if counted[0] else None
        models["champion"]["errors"] = _server_errors(connection, rollout)
    if rollout["mode"] == CANARY:
        _add_realised(settings, rollout, models)
    return {"running": rollout["ended_at"] is None, "rollout": rollout, "models": models}


def _shadow_models(connection: sa.Connection, rollout: dict[str, Any]) -> dict[str, Any]:
    """Champion and shadow on the same requests: the shadow's scores stored beside the champion's."""
    s = shadow_predictions
    figures = connection.execute(
        sa.select(
            sa.func.count(),
            sa.func.avg(s.c.probability),
            sa.func.avg(s.c.champion_probability),
            sa.func.avg(s.c.prediction),
            sa.func.avg(s.c.champion_prediction),
            sa.func.sum(sa.case((s.c.prediction == s.c.champion_prediction, 1), else_=0)),
            sa.func.avg(sa.func.abs(s.c.probability - s.c.champion_probability)),
        ).where(s.c.model_version == rollout["model_version"], s.c.at >= rollout["started_at"])
    ).one()
    requests = int(figures[0] or 0)
    champion = {"version": rollout["champion_version"], "requests": requests}
    challenger = {"version": rollout["model_version"], "requests": requests}
    answered = _canary_models(connection, rollout)["champion"]  # the champion answered everyone
    return {
        "champion": champion
        | {"mean_probability": figures[2], "decision_rate": figures[4], "p99_ms": answered["p99_ms"]},
        "challenger": challenger
        | {
            "p99_ms": None,  # it answers nobody: a shadow never adds to an answer's time
            "mean_probability": figures[1],
            "decision_rate": figures[3],
            "agreement": (figures[5] or 0) / requests if requests else None,
            "mean_abs_difference": figures[6],
        },
    }


def _add_realised(settings: Settings, rollout: dict[str, Any], models: dict[str, Any]) -> None:
    """Each model's realised ROC AUC on its answers whose outcomes arrived (`churn labels ingest`)."""
    from churn_mlops.monitoring.canary import realised
    from churn_mlops.monitoring.store import MonitorStore

    until = datetime.fromisoformat(rollout["ended_at"]) if rollout["ended_at"] else datetime.now(UTC)
    store = MonitorStore(settings.serving_database_url)
    try:
        for figures in models.values():
            found = realised(store, settings, figures["version"], rollout["started_at"], until)
            figures |= {"labelled": found["labelled"], "realised_roc_auc": found["roc_auc"]}
    finally:
        store.close()


def _server_errors(connection: sa.Connection, rollout: dict[str, Any]) -> int:
    """5xx answers on the prediction routes over the rollout's days (the counts are per day)."""
    t = traffic
    first = rollout["started_at"][:10]
    last = (rollout["ended_at"] or _now())[:10]
    found = connection.scalar(
        sa.select(sa.func.sum(t.c.requests)).where(t.c.status >= 500, t.c.day >= first, t.c.day <= last)
    )
    return int(found or 0)


def _canary_models(connection: sa.Connection, rollout: dict[str, Any]) -> dict[str, Any]:
    """Each model on the customers it answered, from the prediction log since the rollout started."""
    p = predictions_table()
    since = datetime.fromisoformat(rollout["started_at"]).replace(tzinfo=None)
    models = {}
    for name, version in (
        ("champion", rollout["champion_version"]),
        ("challenger", rollout["model_version"]),
    ):
        rows = connection.execute(
            sa.select(p.c.probability, p.c.prediction, p.c.latency_ms).where(
                p.c.model_version == version, p.c.at >= since
            )
        ).all()
        figures = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        models[name] = {
            "version": version,
            "requests": len(rows),
            "mean_probability": float(figures[:, 0].mean()) if len(rows) else None,
            "decision_rate": float(figures[:, 1].mean()) if len(rows) else None,
            "p99_ms": float(np.percentile(figures[:, 2], 99)) if len(rows) else None,
        }
    return models


@contextmanager
def _engine(settings: Settings) -> Iterator[sa.Engine]:
    """The serving database, migrated, for one command."""
    migrations.upgrade(settings.serving_database_url)
    engine = create_engine(settings.serving_database_url, 10.0)
    try:
        yield engine
    finally:
        engine.dispose()


def _audit(settings: Settings, record: dict[str, Any]) -> None:
    settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
    with settings.audit_log.open("a") as file:
        file.write(json.dumps({"at": _now(), "model": settings.registry.model_name, **record}) + "\n")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
