"""Rollouts as a user runs them: start a shadow, see how it compares, stop it; each step audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from churn_mlops import migrations
from churn_mlops.errors import ConfigError, NotFoundError
from churn_mlops.models.catalog import CHAMPION, catalog_for
from churn_mlops.serving.rollout import SHADOW, active_rollout, rollouts, shadow_predictions
from churn_mlops.settings import Settings
from churn_mlops.sql import create_engine


def start_rollout(settings: Settings, *, model: str = "challenger", actor: str) -> dict[str, Any]:
    """Start shadowing the champion with `model` (a version or alias); every server follows."""
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
            "mode": SHADOW,
            "model_version": candidate.version,
            "champion_version": champion.version,
            "fraction": 0.0,
            "started_at": _now(),
            "started_by": actor,
        }
        connection.execute(rollouts.insert().values(**row))
    _audit(settings, {"action": "rollout started", "by": actor, "version": candidate.version, "mode": SHADOW})
    return {**row, "poll_seconds": 2.0}


def stop_rollout(settings: Settings, *, actor: str, reason: str = "stopped by hand") -> dict[str, Any]:
    """End the rollout in force; all traffic stays with the champion."""
    with _engine(settings) as engine, engine.begin() as connection:
        running = active_rollout(connection)
        if running is None:
            raise NotFoundError("no rollout is running")
        ended = {"ended_at": _now(), "ended_by": actor, "outcome": "stopped", "reason": reason}
        connection.execute(rollouts.update().where(rollouts.c.id == running.id).values(**ended))
    _audit(
        settings,
        {"action": "rollout stopped", "by": actor, "version": running.model_version, "reason": reason},
    )
    return {"mode": running.mode, "model_version": running.model_version, **ended}


def rollout_status(settings: Settings) -> dict[str, Any]:
    """The rollout in force (or the last one) and how its model compares with the champion so far."""
    r, s = rollouts, shadow_predictions
    with _engine(settings) as engine, engine.connect() as connection:
        last = connection.execute(sa.select(r).order_by(r.c.id.desc()).limit(1)).first()
        if last is None:
            return {"running": False, "rollout": None, "models": {}}
        rollout = dict(last._mapping)
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
    agreement = (figures[5] or 0) / requests if requests else None
    return {
        "running": rollout["ended_at"] is None,
        "rollout": rollout,
        "models": {
            "champion": {
                "version": rollout["champion_version"],
                "requests": requests,
                "mean_probability": figures[2],
                "decision_rate": figures[4],
            },
            "challenger": {
                "version": rollout["model_version"],
                "requests": requests,
                "mean_probability": figures[1],
                "decision_rate": figures[3],
                "agreement": agreement,
                "mean_abs_difference": figures[6],
            },
        },
    }


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
