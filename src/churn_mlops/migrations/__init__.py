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
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from churn_mlops.errors import ChurnError, first_line
from churn_mlops.sql import database_url, sqlite_file

__all__ = ["MigrationError", "current", "head", "upgrade"]

logger = logging.getLogger(__name__)

ADVISORY_LOCK_KEY: Final = int.from_bytes(b"churnmig")  # the PostgreSQL lock every upgrade takes
SQLITE_LOCK_SECONDS: Final = 60.0  # how long a SQLite upgrade waits for another process's write
_process_lock = threading.Lock()  # Alembic keeps the running migration in a module global
_REVISION = re.compile(r"^(down_revision|revision)\b[^=]*=\s*[\"']?(\w+)", re.MULTILINE)

if TYPE_CHECKING:
    from alembic.config import Config


class MigrationError(ChurnError):
    """A database that cannot be brought to the schema this version of churn-mlops expects."""


def upgrade(target: str | sa.Engine) -> None:
    """Bring the database (a URL or an engine) to the newest revision; a cheap no-op once there.

    Alembic is imported only when there is something to upgrade: a server that starts on an
    up-to-date database checks its version table with one query.
    """
    engine = _engine(target)
    try:
        if _current_heads(engine) != {head()}:
            _upgrade(engine)
    finally:
        if engine is not target:
            engine.dispose()


def _upgrade(engine: sa.Engine) -> None:
    from alembic import command
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        with _process_lock, _locked(engine) as connection:
            config = _config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except (CommandError, RevisionError) as exc:
        raise MigrationError(f"serving database at {_where(engine)}: {first_line(exc)}") from exc


def current(target: str | sa.Engine) -> str | None:
    """The database's revision; None where no upgrade has run yet."""
    from alembic.runtime.migration import MigrationContext

    engine = _engine(target)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if engine is not target:
            engine.dispose()


@functools.cache
def head() -> str:
    """The newest revision in `versions/`: the one no other revision names as its parent.

    Read from the files' `revision` and `down_revision` lines, as Alembic reads them (a test
    holds the two to the same answer), without importing Alembic.
    """
    parents: dict[str, str | None] = {}
    for path in sorted((Path(__file__).parent / "versions").glob("*.py")):
        found = dict(_REVISION.findall(path.read_text()))
        if "revision" in found:
            parents[found["revision"]] = found.get("down_revision")
    heads = set(parents) - {parent for parent in parents.values() if parent}
    if len(heads) != 1:
        raise MigrationError(f"churn_mlops.migrations has {len(heads)} head revisions, not one")
    return heads.pop()


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent).replace("%", "%%"))
    return config


def _engine(target: str | sa.Engine) -> sa.Engine:
    if isinstance(target, sa.Engine):
        return target
    return sa.create_engine(database_url(target), poolclass=sa.pool.NullPool)


def _current_heads(engine: sa.Engine) -> set[str]:
    """The revisions in Alembic's version table; none where it does not exist yet."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return set()
        return {row[0] for row in connection.execute(sa.text("SELECT version_num FROM alembic_version"))}


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
