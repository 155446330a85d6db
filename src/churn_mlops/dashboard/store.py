"""What the dashboard reads: stored monitoring results and aggregates, never the raw prediction log.

Every read is a handful of indexed rows: window results (one per day and model version), alerts,
the day profiles' row counts, the served traffic by day and latency bucket, and the job runs.
So a page costs the same with a thousand logged predictions or a hundred million.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from churn_mlops.errors import ChurnError, first_line
from churn_mlops.monitoring import tables
from churn_mlops.monitoring.runs import latest_runs
from churn_mlops.serving.rollout import rollouts
from churn_mlops.serving.traffic import traffic
from churn_mlops.sql import create_engine


class DashboardStoreError(ChurnError):
    """The serving database cannot be read for the dashboard."""


@dataclass(frozen=True)
class Snapshot:
    """Everything the panels are drawn from, for the days in [since, until]."""

    since: date
    until: date
    windows: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    volumes: list[tuple[str, str, int]]  # (day, source, rows)
    traffic: list[tuple[str, int, int, int]]  # (day, status, latency bucket, requests)
    runs: list[dict[str, Any]]
    last_monitor_run: str | None
    rollout: dict[str, Any] | None = None  # the latest rollout, running or ended


class DashboardStore:
    """Reads the snapshot behind the page from the serving database."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.engine = create_engine(url, timeout)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    def snapshot(self, days: int, today: date | None = None) -> Snapshot:
        """The stored results of the last `days` days (today included)."""
        until = today or datetime.now(UTC).date()
        since = until - timedelta(days=days - 1)
        first = since.isoformat()
        with self._errors(), self.engine.connect() as connection:
            return Snapshot(
                since=since,
                until=until,
                windows=_windows(connection, first),
                alerts=_alerts(connection),
                volumes=_volumes(connection, first),
                traffic=_traffic(connection, first),
                runs=latest_runs(connection, limit=20),
                last_monitor_run=connection.scalar(
                    sa.select(tables.state.c.value).where(tables.state.c.name == tables.LAST_RUN)
                ),
                rollout=_rollout(connection),
            )

    def window(self, day: str, version: str) -> dict[str, Any] | None:
        """One daily window's stored result."""
        w = tables.windows
        query = sa.select(w.c.result).where(
            w.c.kind == "1d", w.c.start_day == day, w.c.model_version == version
        )
        with self._errors(), self.engine.connect() as connection:
            text = connection.scalar(query)
        return None if text is None else dict(json.loads(text))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            where = self.engine.url.render_as_string(hide_password=True)
            raise DashboardStoreError(f"dashboard data at {where}: {first_line(exc)}") from exc


def _windows(connection: sa.Connection, first: str) -> list[dict[str, Any]]:
    w = tables.windows
    query = sa.select(w.c.result).where(w.c.kind == "1d", w.c.start_day >= first).order_by(w.c.start_day)
    return [json.loads(text) for text in connection.scalars(query)]


def _alerts(connection: sa.Connection, limit: int = 50) -> list[dict[str, Any]]:
    a = tables.alerts
    columns = (a.c.rule, a.c.kind, a.c.window_start, a.c.model_version, a.c.severity, a.c.state)
    query = sa.select(*columns, a.c.value, a.c.threshold, a.c.message, a.c.fired_at, a.c.resolved_at)
    ordered = query.order_by((a.c.state == "firing").desc(), a.c.fired_at.desc()).limit(limit)
    return [dict(r._mapping) for r in connection.execute(ordered)]


def _rollout(connection: sa.Connection) -> dict[str, Any] | None:
    r = rollouts
    row = connection.execute(sa.select(r).order_by(r.c.id.desc()).limit(1)).first()
    return None if row is None else dict(row._mapping)


def _volumes(connection: sa.Connection, first: str) -> list[tuple[str, str, int]]:
    p = tables.profiles
    query = (
        sa.select(p.c.day, p.c.source, sa.func.sum(p.c.rows))
        .where(p.c.day >= first)
        .group_by(p.c.day, p.c.source)
        .order_by(p.c.day)
    )
    return [(r[0], r[1], int(r[2])) for r in connection.execute(query)]


def _traffic(connection: sa.Connection, first: str) -> list[tuple[str, int, int, int]]:
    t = traffic
    query = (
        sa.select(t.c.day, t.c.status, t.c.bucket, sa.func.sum(t.c.requests))
        .where(t.c.day >= first)
        .group_by(t.c.day, t.c.status, t.c.bucket)
        .order_by(t.c.day)
    )
    return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in connection.execute(query)]
