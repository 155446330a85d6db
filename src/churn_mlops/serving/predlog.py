"""The durable prediction log: every served prediction lands in one SQL table, group-committed.

Callers add rows to their event loop's open batch and wait; the batch is inserted in one
transaction and only then are its waiters resolved, so a prediction that was acknowledged is on
disk. SQLite (WAL, synchronous=NORMAL: a commit survives a killed process, not a power cut) is
the default; PostgreSQL works the same by URL. `at` is TIMESTAMP WITH TIME ZONE on PostgreSQL
and naive ISO-8601 text in UTC on SQLite; it always reads back as a UTC-aware datetime.

Where the commit runs depends on what it costs:
- SQLite: on the event loop, first thing in the turn after a batch's first write, so a batch
  holds every prediction of one turn, and the writers resume right after it (each yields once,
  behind the commit), so their answers go out before the requests read in that turn start: after
  a stall, answers do not queue behind new work. Such a commit writes to the WAL without an fsync
  and costs tens of microseconds, less than handing the batch to a thread and back: both share
  the loop's core, and a thread must win the GIL from the busy loop at each step of the commit.
  The loop never waits on a lock, though: a batch that finds the database locked (the
  checkpointer starting the WAL over, another process writing) goes to the writer thread below,
  which waits its turn.
- PostgreSQL (a network round trip) and `write_sync`: one writer thread. A batch closes wait_ms
  after its first row (or once it holds batch_size rows); the writer inserts it with any other
  batches already waiting, in one transaction, and wakes the waiters with one callback per loop.
  The window is there for throughput and is only kept while it pays; when a batch gets one is
  decided by `batchwindow.WindowPolicy`.

Either way a batch is one multi-row INSERT through the DB-API, in autocommit mode, so the
statement is its own transaction (batches too big for one statement get an explicit one). No
commit checkpoints the SQLite WAL (that stalls every request waiting on it for tens of
milliseconds): a checkpointer thread, scheduled so that its waking does not preempt the event
loop, copies the WAL into the database four times a second and starts it over every few
megabytes. The table, the SQL and the checkpointer are in `predtable.py`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, NamedTuple, TypeAlias

import orjson
import polars as pl
import sqlalchemy as sa

from churn_mlops import migrations
from churn_mlops.errors import first_line
from churn_mlops.serving.batchwindow import WindowPolicy, WindowState
from churn_mlops.serving.predtable import (
    CHECKPOINT_SECONDS,
    SCHEMA,
    Checkpointer,
    Insert,
    PredictionLogError,
    Row,
    create_log_engine,
    predictions_table,
)

__all__ = ["SCHEMA", "PredictionLog", "PredictionLogError", "PredictionRecord", "predictions_table"]

logger = logging.getLogger(__name__)

_Waiter: TypeAlias = asyncio.Future[None] | concurrent.futures.Future[None]
_BUSY: Final = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
MAX_COMMIT_ROWS: Final = 1024  # the writer joins waiting batches into one transaction up to this
DEFAULT_TABLE: Final = "predictions"  # the serving database's own table, made by its migrations


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

    rows: list[Row] = field(default_factory=list)
    waiters: list[_Waiter] = field(default_factory=list)
    timer: asyncio.Handle | None = None  # what seals it: the window's end, or the loop's next turn
    window: WindowState = field(default_factory=WindowState)


def _to_row(record: PredictionRecord, naive_utc_text: bool) -> Row:
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
        batch_size: int = 16,
        wait_ms: float = 1.0,
        table: str = DEFAULT_TABLE,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        commit_on_loop: bool | None = None,
    ) -> None:
        self.url = url
        self.batch_size = batch_size
        self.window = WindowPolicy(wait_ms)  # the server sets its in_flight and arrivals counts
        self.checkpoint_seconds = checkpoint_seconds
        self.commit_on_loop = commit_on_loop  # None: on SQLite
        self.table = predictions_table(table)
        self.commits = 0
        self._engine: sa.Engine | None = None
        self._insert: Insert | None = None
        self._naive_at = False
        self._open: dict[asyncio.AbstractEventLoop, _Batch] = {}  # each loop's batch being filled
        self._waiting = 0  # writes waiting on the log, in open batches and handed-over ones
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()  # None stops the writer
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._checkpointer: Checkpointer | None = None
        self._closed = False
        self._on_loop = False  # whether batches are committed on their event loop (decided at start)
        self._loop_connections: dict[asyncio.AbstractEventLoop, sa.Connection] = {}

    def start(self) -> None:
        """Migrate the serving database (a table of another name: create it) and start the writer."""
        with self._lock:
            if self._thread is not None or self._closed:
                raise PredictionLogError("the prediction log can be started once")
            engine = create_log_engine(self.url)
            try:
                self._create_table(engine)
            except (sa.exc.SQLAlchemyError, migrations.MigrationError) as exc:
                raise _failure(f"cannot create the prediction log table: {first_line(exc)}", exc) from exc
            self._insert = Insert(engine, self.table)
            self._naive_at = engine.dialect.name == "sqlite"
            self._on_loop = self._naive_at if self.commit_on_loop is None else self.commit_on_loop
            self._engine = engine
            self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
            self._thread.start()
            if engine.dialect.name == "sqlite":
                self._checkpointer = Checkpointer(engine, self.checkpoint_seconds)
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
                batch = self._open[loop] = self._new_batch(loop)
            window = batch.window
            if window.settled:
                window.newcomers = True
            batch.rows += rows
            batch.waiters.append(future)
            self._waiting += 1
            if len(batch.rows) >= self.batch_size and not self._on_loop:
                self._seal_locked(loop)
            elif window.windowed and not (window.settled or window.checking) and self._all_waiting():
                window.checking = True  # requests that arrived with this one have yet to run
                loop.call_soon(self._check_settled, loop, batch)
        if self._on_loop:
            # Resume right after the batch's commit, which is queued ahead of this: the answer
            # then goes out before the requests read in the next turn start.
            await asyncio.sleep(0)
        await future

    def write_sync(self, records: Sequence[PredictionRecord]) -> None:
        """Log the records from a thread without an event loop; blocks until they are committed."""
        if not records:
            return
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        batch = _Batch([_to_row(r, self._naive_at) for r in records], [future])
        with self._lock:
            self._check_open()
            self._waiting += 1
            self._queue.put(batch)
        future.result()

    def close(self, timeout: float = 10.0) -> None:
        """Commit everything written so far and stop the writer; later writes raise. Reads still work."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
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
            self._checkpointer.stop(timeout)
        for connection in self._loop_connections.values():
            _discard(connection)
        self._loop_connections.clear()

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

    def _create_table(self, engine: sa.Engine) -> None:
        if self.table.name == DEFAULT_TABLE:
            migrations.upgrade(engine)
        else:
            self.table.create(engine, checkfirst=True)

    def _require_engine(self) -> sa.Engine:
        if self._engine is None:
            raise PredictionLogError("the prediction log is not started")
        return self._engine

    def _check_open(self) -> None:
        if self._closed:
            raise PredictionLogError("the prediction log is closed")
        if self._thread is None:
            raise PredictionLogError("the prediction log is not started")

    def _new_batch(self, loop: asyncio.AbstractEventLoop) -> _Batch:
        """A loop's next batch, sealed when its window ends, or on the loop's next turn."""
        batch = _Batch()
        if self._on_loop:
            batch.timer = loop.call_soon(self._commit_here, loop)
            return batch
        seconds = self.window.next_window(loop.time())
        if seconds > 0:
            batch.window.windowed = True
            batch.timer = loop.call_later(seconds, self._seal, loop)
        else:
            batch.timer = loop.call_soon(self._seal, loop)
        return batch

    def _all_waiting(self) -> bool:
        return self.window.all_waiting(self._waiting)

    def _check_settled(self, loop: asyncio.AbstractEventLoop, batch: _Batch) -> None:
        """A turn after a write found everyone waiting: if that still holds, only a request that
        arrives from now on can join the batch."""
        with self._lock:
            batch.window.checking = False
            if self._open.get(loop) is batch and self._all_waiting():
                self.window.settle(batch.window)

    def _commit_here(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit a loop's batch on the loop itself, in the turn after its first write.

        A SQLite commit (no fsync in WAL mode with synchronous=NORMAL) costs less than handing
        the batch to the writer thread and back, and the writers, each of which yielded right
        behind this callback, answer as soon as it returns, instead of after the writer has won
        the GIL from a busy loop a few times and a loop turn more. The loop never waits on a
        lock: its connection has no busy timeout, so a batch that finds the database locked (the
        checkpointer starting the WAL over, another process writing), or fails for any other
        reason, goes to the writer thread, which waits for the lock and reports failures to the
        waiters.
        """
        with self._lock:
            batch = self._open.pop(loop, None)
        if batch is None:  # close() handed it to the writer
            return
        try:
            self._commit(self._loop_connection(loop), batch.rows)
        except Exception as exc:  # the writer retries it, waiting for locks, and reports failures
            if not _locked(exc):  # a broken connection is replaced; a locked database is normal
                logger.debug("prediction log: a commit on the event loop failed: %s", first_line(exc))
                _discard(self._loop_connections.pop(loop, None))
            with self._lock:
                if not self._closed:  # else the writer may have stopped: answer here
                    self._queue.put(batch)
                    return
            self._answer(batch.waiters, _failure("the prediction log is closed", exc))
            return
        with self._lock:
            self._waiting -= len(batch.waiters)
        _settle(batch.waiters, None)  # type: ignore[arg-type]  # a loop's batch holds its futures

    def _loop_connection(self, loop: asyncio.AbstractEventLoop) -> sa.Connection:
        """The loop's own connection, which fails at once on a locked database instead of waiting."""
        connection = self._loop_connections.get(loop)
        if connection is None:
            connection = self._require_engine().connect().execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("PRAGMA busy_timeout=0")
            self._loop_connections[loop] = connection
        return connection

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
        if batch.window.windowed:
            self.window.closed(batch.window, len(batch.rows) >= self.batch_size, loop.time())
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
                logger.warning("prediction log: %d writes failed: %s", len(rows), first_line(exc))
                _discard(connection)
                connection = None
                self._answer(waiters, _failure(f"prediction log commit failed: {first_line(exc)}", exc))
            else:
                self._answer(waiters, None)
        _discard(connection)

    def _answer(self, waiters: list[_Waiter], error: PredictionLogError | None) -> None:
        with self._lock:
            self._waiting -= len(waiters)
        _resolve(waiters, error)

    def _collect(self) -> tuple[list[Row], list[_Waiter], bool]:
        """Block for a batch, then join any others already handed over, up to MAX_COMMIT_ROWS rows."""
        batch = self._queue.get()
        if batch is None:
            return [], [], True
        rows, waiters = batch.rows, batch.waiters
        while len(rows) < MAX_COMMIT_ROWS:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                break
            if batch is None:
                return rows, waiters, True
            rows += batch.rows
            waiters += batch.waiters
        return rows, waiters, False

    def _commit(self, connection: sa.Connection, rows: list[Row]) -> None:
        insert = self._insert
        if insert is None:
            raise PredictionLogError("the prediction log is not started")
        insert.commit(connection, rows)
        self.commits += 1


def _locked(exc: BaseException) -> bool:
    """Whether a SQLite statement failed only because another connection held the lock."""
    return isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode in _BUSY


def _discard(connection: sa.Connection | None) -> None:
    """Close a connection that may be broken; a fresh one is opened for the next batch."""
    if connection is not None:
        try:
            connection.close()
        except sa.exc.SQLAlchemyError:
            logger.debug("prediction log: closing a broken connection failed", exc_info=True)
