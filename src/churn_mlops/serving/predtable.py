"""The prediction log's table and the SQL the log runs on it.

The table (UTC timestamps on every backend), the engine (SQLite in WAL mode; SQLite's own
checkpoint inside a commit only as a safety net at 16 MiB), multi-row INSERTs through the DB-API
cursor, and the WAL checkpoints with the thread that runs them. The group commit that decides
when the INSERTs run is in `predlog.py`.

The table is append-only and has no index but its key: every index is one more page that each
commit writes to the WAL and each checkpoint copies and syncs, and on SQLite that I/O, not the
INSERT, is what a prediction waits on. Reads go by time or by id, in order; a lookup by
request id scans.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

import polars as pl
import sqlalchemy as sa

from churn_mlops.errors import ChurnError, first_line
from churn_mlops.runtime import run_as_batch

logger = logging.getLogger("churn_mlops.serving.predlog")

Row: TypeAlias = tuple[Any, ...]
SCHEMA: Final[dict[str, pl.DataType]] = {
    "id": pl.Int64(),
    "request_id": pl.String(),
    "at": pl.Datetime("us", "UTC"),
    "key_name": pl.String(),
    "model_version": pl.String(),
    "inputs": pl.String(),
    "probability": pl.Float64(),
    "prediction": pl.Int64(),
    "latency_ms": pl.Float64(),
}
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
CHECKPOINT_SECONDS: Final = 0.25  # how often the checkpointer copies the WAL into the database
CHECKPOINT_PASSES: Final = 8  # PASSIVE checkpoints a round makes to catch up with the writer
RESTART_PAGES: Final = 1024  # 4 MiB of 4 KiB pages: the WAL size at which a round starts it over
RESTART_BUSY_MS: Final = 5  # how long that RESTART may hold off a commit or wait for a reader
ROWS_PER_STATEMENT: Final = 4000  # 8 parameters a row; SQLite allows 32,766 in one statement
WAL_LIMIT_PAGES: Final = 4096  # 16 MiB of 4 KiB pages: the WAL size at which a commit checkpoints
_PLACEHOLDERS: Final = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_ID: Final = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


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


def create_log_engine(url: str) -> sa.Engine:
    """An engine for the log; SQLite gets WAL and synchronous=NORMAL on every connection.

    No pool: the writer keeps its own connection open, and the occasional read opens and closes
    one, so nothing lingers after close() and reads keep working then.
    """
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise PredictionLogError(f"prediction log URL {url!r} is not usable: {exc}") from exc
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
    # commit (20-30 ms here, mostly its two fsyncs) only steps in when that thread cannot keep
    # up, or another process writes to the log without a pause, so the WAL stays bounded anyway.
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_LIMIT_PAGES}")
    cursor.close()


def checkpoint(engine: sa.Engine, mode: str, passes: int = 1, busy_ms: int | None = None) -> int | None:
    """WAL checkpoints on a connection of their own, until the whole WAL is copied (at most
    `passes`); the WAL's size in pages after the last one (0: all of it was copied), or None if
    a checkpoint failed. PASSIVE never blocks the writer; `busy_ms` bounds how long any other
    mode waits on it or on a reader (it holds commits off meanwhile).

    A PASSIVE pass runs beside the writer and copies the WAL as it was when the pass began, so
    a pass that copied all it saw proves nothing while the next one finds more; each pass is
    shorter than the one before, and soon one finds nothing new.
    """
    try:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            if busy_ms is not None:
                cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            seen = -1
            for _ in range(passes):
                busy, frames, copied = cursor.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                if not busy and copied >= frames and (passes == 1 or frames <= seen):
                    return 0  # nothing was committed since the last pass, or the WAL started over
                seen = frames
            return max(seen, 0)
        finally:
            connection.close()
    except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:  # a later checkpoint will catch up
        logger.warning("prediction log: WAL checkpoint failed: %s", first_line(exc))
    return None


class Checkpointer:
    """A thread that copies a SQLite log's WAL into the database every `seconds`, beside the writer.

    Each round makes PASSIVE passes (see `checkpoint`), which never hold a commit up. Short,
    frequent rounds keep each one's burst of copying and syncing small: a round a second took
    30-60 ms and the requests served meanwhile waited with it.

    SQLite starts the WAL over at a commit only if a checkpoint has copied every frame before it,
    which a PASSIVE pass does not manage while commits keep coming; the WAL then grows to
    WAL_LIMIT_PAGES and the writer's own commit checkpoints, holding every waiting prediction for
    20-30 ms. So once the WAL holds RESTART_PAGES, a round ends with a RESTART checkpoint: it
    holds commits off while it copies the few frames the passes left and syncs (a few ms),
    and the next commit starts the WAL over. If the writer or a reader keeps it waiting for
    RESTART_BUSY_MS, it gives up until the next round.

    The thread is scheduled as a batch job (SCHED_BATCH on Linux): a round takes several
    milliseconds of CPU, and a normal thread waking for it preempted the event loop on the same
    core, which at a busy hour then fell behind by tens of milliseconds (docs/benchmarks.md, Serving).
    A batch thread waits for the loop to block or to use up its time slice, and still gets its
    fair share of a busy CPU, so the WAL stays bounded. (The lowest priority, SCHED_IDLE, helped
    the loop as much but starved the checkpointer whenever other processes kept the CPUs busy.)
    """

    def __init__(self, engine: sa.Engine, seconds: float = CHECKPOINT_SECONDS) -> None:
        self.engine = engine
        self.seconds = seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log-checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop after the round in progress, then leave a small WAL behind (TRUNCATE)."""
        self._stopping.set()
        self._thread.join(timeout)
        checkpoint(self.engine, "TRUNCATE")

    def _run(self) -> None:
        run_as_batch()
        while not self._stopping.wait(self.seconds):
            self.round()

    def round(self) -> None:
        """Copy the WAL into the database; start it over if it has grown to RESTART_PAGES."""
        left = checkpoint(self.engine, "PASSIVE", passes=CHECKPOINT_PASSES)
        if left is not None and left >= RESTART_PAGES:
            checkpoint(self.engine, "RESTART", busy_ms=RESTART_BUSY_MS)
