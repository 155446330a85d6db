"""The prediction log's table, its engine, and the multi-row INSERT that commits a batch.

The table is append-only and has no index but its key: every index is one more page that each
commit writes to the WAL and each checkpoint copies and syncs, and on SQLite that I/O, not the
INSERT, is what a prediction waits on. Reads go by time or by id, in order; a lookup by
request id scans.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

import sqlalchemy as sa

from churn_mlops.errors import ChurnError, first_line
from churn_mlops.sql import database_url, safe_url, timeout_args

logger = logging.getLogger("churn_mlops.serving.predlog")

Row: TypeAlias = tuple[Any, ...]
COLUMNS: Final = (
    "request_id",
    "at",
    "key_name",
    "model_version",
    "inputs",
    "probability",
    "prediction",
    "latency_ms",
)
ROWS_PER_STATEMENT: Final = 4000  # 8 parameters a row; SQLite allows 32,766 in one statement
WAL_LIMIT_PAGES: Final = 4096  # 16 MiB of 4 KiB pages: the WAL size at which a commit checkpoints
_PLACEHOLDERS: Final = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_ID: Final = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only
_BUSY: Final = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class PredictionLogError(ChurnError):
    """A prediction that could not be logged: a failed commit, a bad record, a closed log."""


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (naive UTC text on SQLite)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        """Convert to UTC; SQLite stores it without an offset."""
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        """Read back as UTC-aware."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def predictions_table(name: str = "predictions", metadata: sa.MetaData | None = None) -> sa.Table:
    """The prediction log's table definition."""
    return sa.Table(
        name,
        metadata if metadata is not None else sa.MetaData(),
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("key_name", sa.Text),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("prediction", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
    )


class Insert:
    """Multi-row INSERTs of COLUMNS with the driver's positional placeholders."""

    def __init__(self, engine: sa.Engine, table: sa.Table) -> None:
        placeholder = _PLACEHOLDERS.get(engine.dialect.paramstyle)
        if placeholder is None:
            raise PredictionLogError(
                f"prediction log: the {engine.dialect.driver} driver's {engine.dialect.paramstyle!r} "
                "parameters are not supported"
            )
        preparer = engine.dialect.identifier_preparer
        columns = ", ".join(preparer.quote(name) for name in COLUMNS)
        self.head = f"INSERT INTO {preparer.format_table(table)} ({columns}) VALUES "
        self.row = "(" + ", ".join([placeholder] * len(COLUMNS)) + ")"

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one Insert per log, kept for its life
    def statement(self, rows: int) -> str:
        """The INSERT of `rows` rows."""
        return self.head + ", ".join([self.row] * rows)

    def commit(self, connection: sa.Connection, rows: list[Row]) -> None:
        """Insert the rows in one transaction, on a connection in autocommit mode: one statement
        (its own transaction), or BEGIN, a statement per ROWS_PER_STATEMENT rows, COMMIT."""
        cursor = connection.connection.cursor()
        try:
            if len(rows) <= ROWS_PER_STATEMENT:
                self._run(cursor, rows)
                return
            cursor.execute("BEGIN")
            try:
                self._run(cursor, rows)
                cursor.execute("COMMIT")
            except BaseException:  # a COMMIT refused (SQLite busy) leaves the transaction open
                cursor.execute("ROLLBACK")
                raise
        finally:
            cursor.close()

    def _run(self, cursor: Any, rows: list[Row]) -> None:
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            cursor.execute(self.statement(len(chunk)), [value for row in chunk for value in row])


def create_log_engine(url: str, timeout: float) -> sa.Engine:
    """An engine for the log; SQLite gets WAL and synchronous=NORMAL on every connection.

    No pool: the writer and each event loop that commits keep a connection of their own, and
    the migration at start opens and closes its own, so nothing lingers after close(). A connect
    or statement takes at most `timeout` seconds (`sql.timeout_args`).
    """
    try:
        parsed = database_url(url)
    except ChurnError:
        raise PredictionLogError("the prediction log's database URL does not parse") from None
    try:
        engine = sa.create_engine(
            parsed, poolclass=sa.pool.NullPool, connect_args=timeout_args(parsed, timeout)
        )
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise PredictionLogError(
            f"prediction log URL {safe_url(parsed)} is not usable: {first_line(exc)}"
        ) from exc
    if engine.dialect.name == "sqlite":
        if engine.url.database in (None, "", ":memory:"):
            raise PredictionLogError("the prediction log needs a SQLite file, not an in-memory database")
        sa.event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # The checkpointer thread keeps the WAL far below this; SQLite's own checkpoint inside a
    # commit (tens of milliseconds, mostly its two fsyncs) only steps in when that thread cannot
    # keep up, or another process writes to the log without a pause, so the WAL stays bounded anyway.
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_LIMIT_PAGES}")
    cursor.close()


def ping(engine: sa.Engine) -> None:
    """Raise PredictionLogError unless the log's database answers a query on a fresh connection."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.SQLAlchemyError as exc:
        raise PredictionLogError(f"prediction log database: {first_line(exc)}") from exc


def locked(exc: BaseException) -> bool:
    """Whether a SQLite statement failed only because another connection held the lock."""
    return isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode in _BUSY


def discard(connection: sa.Connection | None) -> None:
    """Close a connection that may be broken; a fresh one is opened for the next batch."""
    if connection is not None:
        try:
            connection.close()
        except sa.exc.SQLAlchemyError:
            logger.debug("prediction log: closing a broken connection failed", exc_info=True)
