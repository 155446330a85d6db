"""The serving database's schema under Alembic: `upgrade` brings a database to the newest revision.

Revisions live in `versions/`, one file each, chained by `down_revision`; the prediction log and
the key store call `upgrade` before they touch their tables. Workers that start together take
turns: on PostgreSQL behind a transaction-level advisory lock, on SQLite behind a write
transaction (BEGIN IMMEDIATE) that the others wait for. Whoever comes second finds the database at
head and changes nothing. Every revision runs inside that one transaction, so an upgrade that
fails leaves the database as it was.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError

from churn_mlops.errors import ChurnError, first_line
from churn_mlops.sql import database_url, sqlite_file

__all__ = ["MigrationError", "current", "head", "upgrade"]

logger = logging.getLogger(__name__)

ADVISORY_LOCK_KEY: Final = int.from_bytes(b"churnmig")  # the PostgreSQL lock every upgrade takes
SQLITE_LOCK_SECONDS: Final = 60.0  # how long a SQLite upgrade waits for another process's write
_process_lock = threading.Lock()  # Alembic keeps the running migration in a module global


class MigrationError(ChurnError):
    """A database that cannot be brought to the schema this version of churn-mlops expects."""


def upgrade(target: str | sa.Engine) -> None:
    """Bring the database (a URL or an engine) to the newest revision; a cheap no-op once there."""
    engine = _engine(target)
    try:
        if _current_heads(engine) == {head()}:
            return
        with _process_lock, _locked(engine) as connection:
            config = _config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except (CommandError, RevisionError) as exc:
        raise MigrationError(f"serving database at {_where(engine)}: {first_line(exc)}") from exc
    finally:
        if engine is not target:
            engine.dispose()


def current(target: str | sa.Engine) -> str | None:
    """The database's revision; None where no upgrade has run yet."""
    engine = _engine(target)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if engine is not target:
            engine.dispose()


@functools.cache
def head() -> str:
    """The newest revision in `versions/`."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    if revision is None:
        raise MigrationError("churn_mlops.migrations holds no revisions")
    return revision


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent).replace("%", "%%"))
    return config


def _engine(target: str | sa.Engine) -> sa.Engine:
    if isinstance(target, sa.Engine):
        return target
    return sa.create_engine(database_url(target), poolclass=sa.pool.NullPool)


def _current_heads(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


@contextmanager
def _locked(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction that no other upgrade of the same database runs beside."""
    if sqlite_file(engine) is not None:
        with _sqlite_write_transaction(engine.url) as connection:
            yield connection
        return
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
        yield connection


@contextmanager
def _sqlite_write_transaction(url: sa.URL) -> Iterator[sa.Connection]:
    """A transaction that holds SQLite's write lock from its start: a second upgrader waits at
    BEGIN IMMEDIATE (up to SQLITE_LOCK_SECONDS) rather than failing halfway through."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"timeout": SQLITE_LOCK_SECONDS})
    sa.event.listen(engine, "connect", _no_driver_transactions)
    sa.event.listen(engine, "begin", _begin_immediate)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3 would run DDL outside any transaction; `_begin_immediate` opens one itself.
    dbapi_connection.isolation_level = None


def _begin_immediate(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _where(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
