"""The group commit: each event loop's writes gather in a batch, committed on the loop or by the writer.

Where a batch is committed depends on what the commit costs:
- SQLite: on the event loop, first thing in the turn after the batch's first write, so a batch
  holds every prediction of one turn, and the writers resume right after it (each yields once,
  behind the commit), so their answers go out before the requests read in that turn start: after
  a stall, answers do not queue behind new work. Such a commit writes to the WAL without an fsync
  and costs tens of microseconds, less than handing the batch to a thread and back: both share
  the loop's core, and a thread must win the GIL from the busy loop at each step of the commit.
  The loop never waits on a lock, though: a batch that finds the database locked (the
  checkpointer starting the WAL over, another process writing) goes to the writer thread, which
  waits its turn.
- PostgreSQL (a network round trip) and `write_sync`: the writer thread. A batch closes wait_ms
  after its first row (or once it holds batch_size rows); the writer inserts it with any other
  batches already waiting, in one transaction, and wakes the waiters with one callback per loop.
  The window is there for throughput and is only kept while it pays (`window.WindowPolicy`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa

from churn_mlops import migrations
from churn_mlops.errors import first_line
from churn_mlops.serving.predlog.batch import Batch, Waiter, expire, failure, resolve, settle
from churn_mlops.serving.predlog.checkpoint import CHECKPOINT_SECONDS, Checkpointer
from churn_mlops.serving.predlog.record import PredictionRecord, to_row
from churn_mlops.serving.predlog.table import (
    Insert,
    PredictionLogError,
    Row,
    create_log_engine,
    discard,
    locked,
    ping,
    predictions_table,
)
from churn_mlops.serving.predlog.window import WindowPolicy
from churn_mlops.serving.predlog.writer import Writer

logger = logging.getLogger("churn_mlops.serving.predlog")

DEFAULT_TABLE: Final = "predictions"  # the serving database's own table, made by its migrations


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
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.timeout = timeout  # seconds a connect, a statement or a write's wait after its window may take
        self.batch_size = batch_size
        self.window = WindowPolicy(wait_ms)  # the server sets its in_flight and arrivals counts
        self.checkpoint_seconds = checkpoint_seconds
        self.commit_on_loop = commit_on_loop  # None: on SQLite
        self.table = predictions_table(table)
        self.commits = 0
        self._engine: sa.Engine | None = None
        self._insert: Insert | None = None
        self._naive_at = False
        self._open: dict[asyncio.AbstractEventLoop, Batch] = {}  # each loop's batch being filled
        self._waiting = 0  # writes waiting on the log, in open batches and handed-over ones
        self._queue: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()  # None stops the writer
        self._lock = threading.Lock()
        self._thread: Writer | None = None
        self._checkpointer: Checkpointer | None = None
        self._closed = False
        self._on_loop = False  # whether batches are committed on their event loop (decided at start)
        self._loop_connections: dict[asyncio.AbstractEventLoop, sa.Connection] = {}

    def start(self) -> None:
        """Migrate the serving database (a table of another name: create it) and start the writer."""
        with self._lock:
            if self._thread is not None or self._closed:
                raise PredictionLogError("the prediction log can be started once")
            engine = create_log_engine(self.url, self.timeout)
            try:
                self._create_table(engine)
            except (sa.exc.SQLAlchemyError, migrations.MigrationError) as exc:
                raise failure(f"cannot create the prediction log table: {first_line(exc)}", exc) from exc
            self._insert = Insert(engine, self.table)
            self._naive_at = engine.dialect.name == "sqlite"
            self._on_loop = self._naive_at if self.commit_on_loop is None else self.commit_on_loop
            self._engine = engine
            self._thread = Writer(engine, self._queue, self._commit, self._answer)
            self._thread.start()
            if engine.dialect.name == "sqlite":
                self._checkpointer = Checkpointer(engine, self.checkpoint_seconds)
                self._checkpointer.start()

    async def write(self, records: Sequence[PredictionRecord]) -> None:
        """Log the records; returns once they are committed."""
        if not records:
            return
        rows = [to_row(r, self._naive_at) for r in records]
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
        batch = Batch([to_row(r, self._naive_at) for r in records], [future])
        with self._lock:
            self._check_open()
            self._waiting += 1
            self._queue.put(batch)
        future.result()

    def close(self, timeout: float = 10.0) -> None:
        """Commit everything written so far and stop the writer; later writes raise."""
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
            discard(connection)
        self._loop_connections.clear()

    def ping(self) -> None:
        """Raise PredictionLogError unless the log's database answers within the timeout."""
        ping(self._require_engine())

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

    def _new_batch(self, loop: asyncio.AbstractEventLoop) -> Batch:
        """A loop's next batch, sealed when its window ends, or on the loop's next turn."""
        batch = Batch()
        if self._on_loop:
            batch.timer = loop.call_soon(self._commit_here, loop)
            return batch
        seconds = self.window.next_window(loop.time())
        # A database that hangs must not hold requests: the waiters fail once it is overdue.
        loop.call_later(seconds + self.timeout, expire, batch.waiters, self.timeout)
        if seconds > 0:
            batch.window.windowed = True
            batch.timer = loop.call_later(seconds, self._seal, loop)
        else:
            batch.timer = loop.call_soon(self._seal, loop)
        return batch

    def _all_waiting(self) -> bool:
        return self.window.all_waiting(self._waiting)

    def _check_settled(self, loop: asyncio.AbstractEventLoop, batch: Batch) -> None:
        """A turn after a write found everyone waiting: if that still holds, only a request that
        arrives from now on can join the batch."""
        with self._lock:
            batch.window.checking = False
            if self._open.get(loop) is batch and self._all_waiting():
                self.window.settle(batch.window)

    def _commit_here(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit a loop's batch on the loop itself, in the turn after its first write.

        The loop's connection has no busy timeout, so a batch that finds the database locked, or
        fails for any other reason, goes to the writer thread, which waits for the lock and
        reports failures to the waiters.
        """
        with self._lock:
            batch = self._open.pop(loop, None)
        if batch is None:  # close() handed it to the writer
            return
        try:
            self._commit(self._loop_connection(loop), batch.rows)
        except Exception as exc:  # the writer retries it, waiting for locks, and reports failures
            if not locked(exc):  # a broken connection is replaced; a locked database is normal
                logger.debug("prediction log: a commit on the event loop failed: %s", first_line(exc))
                discard(self._loop_connections.pop(loop, None))
            with self._lock:
                if not self._closed:  # else the writer may have stopped: answer here
                    self._queue.put(batch)
                    return
            self._answer(batch.waiters, failure("the prediction log is closed", exc))
            return
        with self._lock:
            self._waiting -= len(batch.waiters)
        settle(batch.waiters, None)  # type: ignore[arg-type]  # a loop's batch holds its futures

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

    def _answer(self, waiters: list[Waiter], error: PredictionLogError | None) -> None:
        with self._lock:
            self._waiting -= len(waiters)
        resolve(waiters, error)

    def _commit(self, connection: sa.Connection, rows: list[Row]) -> None:
        insert = self._insert
        if insert is None:
            raise PredictionLogError("the prediction log is not started")
        insert.commit(connection, rows)
        self.commits += 1
