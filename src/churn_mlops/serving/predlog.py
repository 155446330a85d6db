"""The durable prediction log: every served prediction lands in one SQL table, group-committed.

Callers add rows to their event loop's open batch and wait. A batch closes wait_ms after its
first row (or at batch_size rows) and goes to one writer thread, which inserts it in one
transaction and only then resolves the waiters, so a prediction that was acknowledged is on
disk. SQLite (WAL, synchronous=NORMAL: a commit survives a killed process, not a power cut) is the
default; PostgreSQL works the same by URL. `at` is TIMESTAMP WITH TIME ZONE on PostgreSQL and
naive ISO-8601 text in UTC on SQLite; it always reads back as a UTC-aware datetime. A lone write
waits up to wait_ms.

The commit path is the per-request cost of the log, so it is built for the event loop's core:
batches are made on the loop (one hand-off to the writer per batch, not per request), and the
writer inserts a batch with one multi-row INSERT through the DB-API, in autocommit mode, so the
statement is its own transaction (batches too big for one statement get an explicit one). Each
statement the driver runs lets the event loop take the GIL, and getting it back costs a
thread switch: one statement per batch keeps those few. On SQLite the writer never checkpoints
the WAL itself (an automatic checkpoint inside a commit stalls
every request waiting on that commit for tens of milliseconds); a checkpointer thread does it
once a second, off the commit path, and once more at close.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import queue
import sqlite3
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, TypeAlias

import orjson
import polars as pl
import sqlalchemy as sa

from churn_mlops.errors import ChurnError

__all__ = ["SCHEMA", "PredictionLog", "PredictionLogError", "PredictionRecord", "predictions_table"]

logger = logging.getLogger(__name__)

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

_Waiter: TypeAlias = asyncio.Future[None] | concurrent.futures.Future[None]
_Row: TypeAlias = tuple[Any, ...]
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
_PLACEHOLDERS: Final = {"qmark": "?", "format": "%s", "pyformat": "%s"}
ROWS_PER_STATEMENT: Final = 4000  # 8 parameters a row; SQLite allows 32,766 in one statement
CHECKPOINT_SECONDS: Final = 1.0
RESTART_WAIT_MS: Final = 20  # how long the writer waits on other processes to restart the WAL
BUSY_TIMEOUT_MS: Final = 5000  # pysqlite's default wait for a lock


class PredictionLogError(ChurnError):
    """A prediction that could not be logged: a failed commit, a bad record, a closed log."""


class PredictionRecord(NamedTuple):
    """One served prediction, as the log stores it (a tuple: one is made per request)."""

    request_id: str
    at: datetime
    key_name: str | None
    model_version: str
    inputs: Mapping[str, object]
    probability: float
    prediction: int
    latency_ms: float


@dataclass
class _Batch:
    """Rows for one transaction and whoever waits for them."""

    rows: list[_Row] = field(default_factory=list)
    waiters: list[_Waiter] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


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


_ID: Final = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


def predictions_table(name: str = "predictions", metadata: sa.MetaData | None = None) -> sa.Table:
    """The prediction log's table definition."""
    return sa.Table(
        name,
        metadata if metadata is not None else sa.MetaData(),
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Text, nullable=False, index=True),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("key_name", sa.Text),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("prediction", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
    )


def _to_row(record: PredictionRecord, naive_utc_text: bool) -> _Row:
    """The table row for one record, in COLUMNS order; inputs become JSON text.

    `at` is naive UTC text on SQLite, in the format SQLAlchemy's DateTime reads back.
    """
    if record.at.tzinfo is None:
        raise PredictionLogError(f"prediction {record.request_id}: `at` must be timezone-aware")
    try:
        inputs = orjson.dumps(record.inputs).decode()
    except TypeError as exc:
        raise PredictionLogError(f"prediction {record.request_id}: inputs are not JSON: {exc}") from exc
    utc = record.at.astimezone(UTC)
    at = utc.replace(tzinfo=None).isoformat(" ", "microseconds") if naive_utc_text else utc
    return (
        record.request_id,
        at,
        record.key_name,
        record.model_version,
        inputs,
        float(record.probability),
        int(record.prediction),
        float(record.latency_ms),
    )


class _Insert:
    """Multi-row INSERT statements of COLUMNS with the driver's positional placeholders."""

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

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one _Insert per log, kept for its life
    def statement(self, rows: int) -> str:
        """The INSERT of `rows` rows."""
        return self.head + ", ".join([self.row] * rows)

    def run(self, cursor: Any, rows: list[_Row]) -> None:
        """Insert the rows, one statement per ROWS_PER_STATEMENT."""
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            cursor.execute(self.statement(len(chunk)), [value for row in chunk for value in row])


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it, off the commit path
    cursor.close()


def _create_engine(url: str) -> sa.Engine:
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


def _failure(message: str, cause: BaseException) -> PredictionLogError:
    error = PredictionLogError(message)
    error.__cause__ = cause
    return error


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    """Resolve one loop's waiters (runs on that loop); each failure gets its own exception."""
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(_failure(str(error), error.__cause__ or error))


def _resolve(waiters: list[_Waiter], error: PredictionLogError | None) -> None:
    """Wake the waiters of a commit: one thread-safe callback per event loop, not per write."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for waiter in waiters:
        if isinstance(waiter, asyncio.Future):
            by_loop.setdefault(waiter.get_loop(), []).append(waiter)
        elif waiter.done():
            continue
        elif error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(_failure(str(error), error.__cause__ or error))
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, futures, error)
        except RuntimeError:  # the caller's loop is closed; nobody is waiting any more
            logger.debug("prediction log: event loop closed before its writes were acknowledged")


class PredictionLog:
    """Group-committed, durable log of served predictions in one SQL table."""

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 256,
        wait_ms: float = 2.0,
        table: str = "predictions",
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        self.url = url
        self.batch_size = batch_size
        self.wait_ms = wait_ms
        self.checkpoint_seconds = checkpoint_seconds
        self.table = predictions_table(table)
        self.commits = 0
        self._engine: sa.Engine | None = None
        self._insert: _Insert | None = None
        self._naive_at = False
        self._open: dict[asyncio.AbstractEventLoop, _Batch] = {}  # each loop's batch being filled
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()  # None stops the writer
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()
        self._restart_wal = threading.Event()
        self._closed = False

    def start(self) -> None:
        """Create the table if needed and start the writer thread."""
        with self._lock:
            if self._thread is not None or self._closed:
                raise PredictionLogError("the prediction log can be started once")
            engine = _create_engine(self.url)
            try:
                self.table.create(engine, checkfirst=True)
            except sa.exc.SQLAlchemyError as exc:
                raise _failure(f"cannot create the prediction log table: {_first_line(exc)}", exc) from exc
            self._insert = _Insert(engine, self.table)
            self._naive_at = engine.dialect.name == "sqlite"
            self._engine = engine
            self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
            self._thread.start()
            if engine.dialect.name == "sqlite":
                self._checkpointer = threading.Thread(
                    target=self._checkpoint_periodically, name="prediction-log-checkpointer", daemon=True
                )
                self._checkpointer.start()

    async def write(self, records: Sequence[PredictionRecord]) -> None:
        """Log the records; returns once they are committed."""
        if not records:
            return
        rows = [_to_row(r, self._naive_at) for r in records]
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._check_open()
            batch = self._open.get(loop)
            if batch is None:
                batch = self._open[loop] = _Batch()
                batch.timer = loop.call_later(self.wait_ms / 1000, self._seal, loop)
            batch.rows += rows
            batch.waiters.append(future)
            if len(batch.rows) >= self.batch_size:
                self._seal_locked(loop)
        await future

    def write_sync(self, records: Sequence[PredictionRecord]) -> None:
        """Log the records from a thread without an event loop; blocks until they are committed."""
        if not records:
            return
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        batch = _Batch([_to_row(r, self._naive_at) for r in records], [future])
        with self._lock:
            self._check_open()
            self._queue.put(batch)
        future.result()

    def close(self, timeout: float = 10.0) -> None:
        """Commit everything written so far and stop the writer; later writes raise. Reads still work."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._closing.set()
            for loop in list(self._open):
                self._seal_locked(loop)
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            raise PredictionLogError(f"the prediction log writer did not finish within {timeout}s")
        if self._checkpointer is not None:
            self._checkpointer.join(timeout)
            self._checkpoint("TRUNCATE")  # leave a small WAL behind

    def read(self, limit: int | None = None) -> pl.DataFrame:
        """The logged predictions in insertion order; with `limit`, only the latest `limit`."""
        query = sa.select(self.table).order_by(self.table.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._require_engine().connect() as connection:
            rows = [tuple(row) for row in connection.execute(query)]
        rows.reverse()
        return pl.DataFrame(rows, schema=SCHEMA, orient="row")

    def count(self) -> int:
        """How many predictions are logged."""
        with self._require_engine().connect() as connection:
            return int(connection.scalar(sa.select(sa.func.count()).select_from(self.table)) or 0)

    def _require_engine(self) -> sa.Engine:
        if self._engine is None:
            raise PredictionLogError("the prediction log is not started")
        return self._engine

    def _check_open(self) -> None:
        if self._closed:
            raise PredictionLogError("the prediction log is closed")
        if self._thread is None:
            raise PredictionLogError("the prediction log is not started")

    def _seal(self, loop: asyncio.AbstractEventLoop) -> None:
        """The batching window of a loop's batch is over: hand the batch to the writer."""
        with self._lock:
            self._seal_locked(loop)

    def _seal_locked(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._open.pop(loop, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        self._queue.put(batch)

    def _run(self) -> None:
        """The writer thread: take the batches handed over, commit them, wake their waiters."""
        engine = self._require_engine()
        connection: sa.Connection | None = None
        stop = False
        while not stop:
            rows, waiters, stop = self._collect()
            if not rows:
                continue
            try:
                if connection is None:
                    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                self._commit(connection, rows)
            except Exception as exc:  # any failure must reach the waiters, and the writer must live on
                logger.warning("prediction log: %d writes failed: %s", len(rows), _first_line(exc))
                _discard(connection)
                connection = None
                _resolve(waiters, _failure(f"prediction log commit failed: {_first_line(exc)}", exc))
            else:
                _resolve(waiters, None)
                if self._restart_wal.is_set():
                    self._restart_wal.clear()
                    _restart_wal(connection)
        _discard(connection)

    def _collect(self) -> tuple[list[_Row], list[_Waiter], bool]:
        """Block for a batch, then join any others already handed over, up to batch_size rows."""
        batch = self._queue.get()
        if batch is None:
            return [], [], True
        rows, waiters = batch.rows, batch.waiters
        while len(rows) < self.batch_size:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                break
            if batch is None:
                return rows, waiters, True
            rows += batch.rows
            waiters += batch.waiters
        return rows, waiters, False

    def _commit(self, connection: sa.Connection, rows: list[_Row]) -> None:
        """Insert the rows in one transaction: one statement (autocommit), or BEGIN ... COMMIT."""
        insert = self._insert
        assert insert is not None  # set by start() before the writer runs
        cursor = connection.connection.cursor()
        try:
            if len(rows) <= ROWS_PER_STATEMENT:
                insert.run(cursor, rows)
            else:
                cursor.execute("BEGIN")
                try:
                    insert.run(cursor, rows)
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
        finally:
            cursor.close()
        self.commits += 1

    def _checkpoint_periodically(self) -> None:
        """The checkpointer thread (SQLite): copy the WAL into the database every checkpoint_seconds.

        A PASSIVE checkpoint runs beside the writer, so under steady writes it never catches up
        with the end of the WAL, and SQLite only starts the WAL over once one has. So after each
        pass the writer, between two batches, runs a RESTART checkpoint: it copies the few pages
        written during the pass, and the next commit writes from the start of the WAL again.

        At the lowest CPU priority, where the OS allows it per thread (Linux): copying a second
        of WAL takes milliseconds of CPU, which must not take the core from the event loop.
        """
        if sys.platform == "linux":
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread only
        while not self._closing.wait(self.checkpoint_seconds):
            self._checkpoint("PASSIVE")
            self._restart_wal.set()  # the writer finishes the job between two batches

    def _checkpoint(self, mode: str) -> None:
        """One WAL checkpoint on a connection of its own; PASSIVE never blocks the writer."""
        try:
            connection = self._require_engine().raw_connection()
            try:
                connection.cursor().execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
            finally:
                connection.close()
        except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:  # a later checkpoint will catch up
            logger.warning("prediction log: WAL checkpoint failed: %s", _first_line(exc))


def _restart_wal(connection: sa.Connection) -> None:
    """A RESTART checkpoint on the writer's connection: the WAL starts over at the next commit.

    Waits at most RESTART_WAIT_MS for other processes' readers and writers; when they are busy,
    the next pass tries again.
    """
    cursor = connection.connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
        cursor.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
    except sqlite3.Error as exc:
        logger.debug("prediction log: WAL restart skipped: %s", exc)
    finally:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()


def _discard(connection: sa.Connection | None) -> None:
    """Close a connection that may be broken; a fresh one is opened for the next batch."""
    if connection is not None:
        try:
            connection.close()
        except sa.exc.SQLAlchemyError:
            logger.debug("prediction log: closing a broken connection failed", exc_info=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
