"""The monitoring store: profiles, scores, labels, window results and alerts in the serving database.

SQLite under CHURN_HOME by default, PostgreSQL by URL; the tables come from Alembic migrations.
Every write is one transaction, so a run that fails leaves the previous results in place.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa

from churn_mlops.errors import MonitoringError, first_line
from churn_mlops.monitoring import tables
from churn_mlops.monitoring.outcomes import Outcomes
from churn_mlops.monitoring.profile import Profile
from churn_mlops.monitoring.tables import now_text
from churn_mlops.serving.predlog import predictions_table
from churn_mlops.sql import create_engine, sqlite_file


class MonitorStoreError(MonitoringError):
    """The monitoring store cannot be used: unreachable, or another run holds its lock."""


class LockHeldError(MonitorStoreError):
    """Another run (of monitoring, or of the loop) holds the lock; try again when it ends."""

    exit_code = 9


@dataclass(frozen=True)
class StoredProfile:
    """A day's profile from one source (the prediction log, or a batch run) for one version."""

    day: str
    source: str
    model_version: str
    profile: Profile


class MonitorStore:
    """Reads the prediction log and reads and writes the monitoring tables."""

    def __init__(self, url: str) -> None:
        from churn_mlops.migrations import upgrade

        self.url = url
        self.engine = create_engine(url)
        database = sqlite_file(self.engine)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
            sa.event.listen(self.engine, "connect", _wait_for_locks)
        try:
            upgrade(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise MonitorStoreError(
                f"monitoring store at {self.where}: {first_line(getattr(exc, 'orig', None) or exc)}"
            ) from exc
        self.predictions = predictions_table()
        self.outcomes = Outcomes(self.engine)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn a database error in the block into a one-line MonitorStoreError naming the store."""
        driver_error = self.engine.dialect.loaded_dbapi.Error  # raised where SQL runs on a raw cursor
        try:
            yield
        except (sa.exc.SQLAlchemyError, driver_error) as exc:
            raise MonitorStoreError(
                f"monitoring store at {self.where}: {first_line(getattr(exc, 'orig', None) or exc)}"
            ) from exc

    @property
    def where(self) -> str:
        """The database, password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    @contextmanager
    def lock(self, name: str = tables.LOCK, ttl: timedelta = timedelta(hours=1)) -> Iterator[None]:
        """Hold a run lock (a row) for the block. A lock older than `ttl` is taken over, and so is
        one whose holder was a process on this machine that no longer exists (a crashed run)."""
        holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": now_text()})
        self._acquire(name, holder, ttl)
        try:
            yield
        finally:
            with self.engine.begin() as connection:
                connection.execute(tables.state.delete().where(tables.state.c.name == name))

    def _acquire(self, name: str, holder: str, ttl: timedelta) -> None:
        stale = (datetime.now(UTC) - ttl).isoformat(timespec="milliseconds")
        state = tables.state
        with self.engine.begin() as connection:
            connection.execute(state.delete().where(state.c.name == name, state.c.updated_at < stale))
            current = connection.scalar(sa.select(state.c.value).where(state.c.name == name))
            if current is not None and _holder_is_gone(current):
                connection.execute(state.delete().where(state.c.name == name, state.c.value == current))
        try:
            with self.engine.begin() as connection:
                connection.execute(state.insert().values(name=name, value=holder, updated_at=now_text()))
        except sa.exc.IntegrityError as exc:
            what = "monitoring" if name == tables.LOCK else name.removeprefix("lock:")
            raise LockHeldError(
                f"another {what} run holds the lock ({self.get_state(name)}); try again when it ends"
            ) from exc

    def get_state(self, name: str) -> str | None:
        """A named state value (a watermark, the last run's time)."""
        with self.engine.connect() as connection:
            return connection.scalar(sa.select(tables.state.c.value).where(tables.state.c.name == name))

    def set_state(self, connection: sa.Connection, name: str, value: str) -> None:
        """Set a state value inside the caller's transaction."""
        connection.execute(tables.state.delete().where(tables.state.c.name == name))
        connection.execute(tables.state.insert().values(name=name, value=value, updated_at=now_text()))

    def read_predictions(self, after_id: int, chunk_rows: int) -> Iterator[pl.DataFrame]:
        """Logged predictions with ids above `after_id`, in id order, `chunk_rows` at a time."""
        table = self.predictions
        columns = [table.c.id, table.c.at, table.c.model_version, table.c.inputs, table.c.probability]
        columns.append(table.c.prediction)
        names = [c.name for c in columns]
        while True:
            query = sa.select(*columns).where(table.c.id > after_id).order_by(table.c.id).limit(chunk_rows)
            with self.engine.connect() as connection:
                if not sa.inspect(connection).has_table(table.name):
                    return
                rows = connection.execute(query).all()
            if not rows:
                return
            frame = pl.DataFrame(rows, schema=names, orient="row")
            yield frame.with_columns(pl.col("at").dt.replace_time_zone("UTC"))
            after_id = int(rows[-1][0])

    def add_profiles(self, profiles: Sequence[StoredProfile], connection: sa.Connection) -> None:
        """Add profiles to the stored ones of the same day, source and version."""
        table = tables.profiles
        for item in profiles:
            key = (
                table.c.day == item.day,
                table.c.source == item.source,
                table.c.model_version == item.model_version,
            )
            stored = connection.scalar(sa.select(table.c.profile).where(*key))
            profile = item.profile + Profile.from_json(json.loads(stored)) if stored else item.profile
            connection.execute(table.delete().where(*key))
            connection.execute(
                table.insert().values(
                    day=item.day,
                    source=item.source,
                    model_version=item.model_version,
                    rows=profile.rows,
                    profile=json.dumps(profile.to_json()),
                    updated_at=now_text(),
                )
            )

    def replace_profile(self, item: StoredProfile) -> None:
        """Store a profile in place of any of the same day, source and version (a batch run's)."""
        table = tables.profiles
        with self.engine.begin() as connection:
            connection.execute(
                table.delete().where(
                    table.c.day == item.day,
                    table.c.source == item.source,
                    table.c.model_version == item.model_version,
                )
            )
            self.add_profiles([item], connection)

    def profiles(self, start_day: str, end_day: str) -> list[StoredProfile]:
        """Stored profiles of the days in [start_day, end_day)."""
        table = tables.profiles
        query = sa.select(table.c.day, table.c.source, table.c.model_version, table.c.profile).where(
            table.c.day >= start_day, table.c.day < end_day
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(table.c.day)).all()
        return [StoredProfile(r[0], r[1], r[2], Profile.from_json(json.loads(r[3]))) for r in rows]

    def profile_days(self) -> list[tuple[str, str, str]]:
        """Every (day, model version) with a stored profile, and when its profiles last changed."""
        table = tables.profiles
        query = sa.select(table.c.day, table.c.model_version, sa.func.max(table.c.updated_at)).group_by(
            table.c.day, table.c.model_version
        )
        with self.engine.connect() as connection:
            return [(r[0], r[1], r[2]) for r in connection.execute(query.order_by(table.c.day))]

    def save_window(self, row: dict[str, Any], connection: sa.Connection) -> None:
        """Store a window's results in place of earlier ones."""
        w = tables.windows
        connection.execute(
            w.delete().where(
                w.c.kind == row["kind"],
                w.c.start_day == row["start_day"],
                w.c.model_version == row["model_version"],
            )
        )
        connection.execute(w.insert().values(**row))

    def windows(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Stored window results, oldest first."""
        w = tables.windows
        query = sa.select(w).order_by(w.c.start_day, w.c.model_version)
        if kind is not None:
            query = query.where(w.c.kind == kind)
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        """Stored alerts, newest window first."""
        a = tables.alerts
        query = sa.select(a).order_by(a.c.window_start.desc(), a.c.rule)
        if state is not None:
            query = query.where(a.c.state == state)
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]


def _holder_is_gone(holder: str) -> bool:
    """Whether a lock's holder was a process on this machine that has since ended."""
    try:
        found = json.loads(holder)
        if found.get("host") != socket.gethostname():
            return False
        os.kill(int(found["pid"]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, KeyError, TypeError, PermissionError):
        return False
    return False


def _wait_for_locks(dbapi_connection: Any, _record: Any) -> None:
    """Wait up to 30 s for the server's writes instead of failing at once (SQLite)."""
    dbapi_connection.execute("PRAGMA busy_timeout=30000")
