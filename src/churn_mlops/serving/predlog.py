"""The durable prediction log: every served prediction lands in one SQL table, group-committed.

Callers enqueue rows and wait; one writer thread drains the queue into batches, inserts each batch
in one transaction and only then resolves the waiters, so a prediction that was acknowledged is on
disk. SQLite (WAL, synchronous=NORMAL: a commit survives a killed process, not a power cut) is the
default; PostgreSQL works the same by URL. `at` is TIMESTAMP WITH TIME ZONE on PostgreSQL and
naive ISO-8601 text in UTC on SQLite; it always reads back as a UTC-aware datetime. A batch closes
at batch_size records or wait_ms after its first one, so a lone write waits up to wait_ms.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

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
_Row: TypeAlias = dict[str, Any]


class PredictionLogError(ChurnError):
    """A prediction that could not be logged: a failed commit, a bad record, a closed log."""


@dataclass(frozen=True)
class PredictionRecord:
    """One served prediction, as the log stores it."""

    request_id: str
    at: datetime
    key_name: str | None
    model_version: str
    inputs: Mapping[str, object]
    probability: float
    prediction: int
    latency_ms: float


@dataclass(frozen=True)
class _Pending:
    rows: list[_Row]
    waiter: _Waiter


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


def _to_row(record: PredictionRecord) -> _Row:
    """The table row for one record; inputs become JSON text."""
    if record.at.tzinfo is None:
        raise PredictionLogError(f"prediction {record.request_id}: `at` must be timezone-aware")
    try:
        inputs = orjson.dumps(record.inputs).decode()
    except TypeError as exc:
        raise PredictionLogError(f"prediction {record.request_id}: inputs are not JSON: {exc}") from exc
    return {
        "request_id": record.request_id,
        "at": record.at,
        "key_name": record.key_name,
        "model_version": record.model_version,
        "inputs": inputs,
        "probability": float(record.probability),
        "prediction": int(record.prediction),
        "latency_ms": float(record.latency_ms),
    }


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
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


def _resolve(batch: list[_Pending], error: PredictionLogError | None) -> None:
    """Wake every waiter of a batch: one thread-safe callback per event loop, not per record."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for pending in batch:
        waiter = pending.waiter
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
        self, url: str, *, batch_size: int = 256, wait_ms: float = 2.0, table: str = "predictions"
    ) -> None:
        self.url = url
        self.batch_size = batch_size
        self.wait_ms = wait_ms
        self.table = predictions_table(table)
        self.commits = 0
        self._engine: sa.Engine | None = None
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()  # None stops the writer
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
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
            self._engine = engine
            self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
            self._thread.start()

    async def write(self, records: Sequence[PredictionRecord]) -> None:
        """Log the records; returns once they are committed."""
        if not records:
            return
        future = asyncio.get_running_loop().create_future()
        self._submit(_Pending([_to_row(r) for r in records], future))
        await future

    def write_sync(self, records: Sequence[PredictionRecord]) -> None:
        """Log the records from a thread without an event loop; blocks until they are committed."""
        if not records:
            return
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._submit(_Pending([_to_row(r) for r in records], future))
        future.result()

    def close(self, timeout: float = 10.0) -> None:
        """Commit everything queued and stop the writer; later writes raise. Reads still work."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            raise PredictionLogError(f"the prediction log writer did not finish within {timeout}s")

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

    def _submit(self, pending: _Pending) -> None:
        with self._lock:
            if self._closed:
                raise PredictionLogError("the prediction log is closed")
            if self._thread is None:
                raise PredictionLogError("the prediction log is not started")
            self._queue.put(pending)

    def _run(self) -> None:
        """The writer thread: collect a batch, commit it, wake its waiters, until stopped."""
        engine = self._require_engine()
        connection: sa.Connection | None = None
        stop = False
        while not stop:
            batch, stop = self._collect()
            if not batch:
                continue
            try:
                connection = connection if connection is not None else engine.connect()
                self._commit(connection, batch)
            except Exception as exc:  # any failure must reach the waiters, and the writer must live on
                logger.warning("prediction log: %d writes failed: %s", len(batch), _first_line(exc))
                _discard(connection)
                connection = None
                _resolve(batch, _failure(f"prediction log commit failed: {_first_line(exc)}", exc))
            else:
                _resolve(batch, None)
        _discard(connection)

    def _collect(self) -> tuple[list[_Pending], bool]:
        """Block for one write, then gather more until the batch is full or wait_ms has passed."""
        batch: list[_Pending] = []
        size = 0
        item = self._queue.get()
        deadline = time.monotonic() + self.wait_ms / 1000
        while item is not None:
            batch.append(item)
            size += len(item.rows)
            if size >= self.batch_size:
                return batch, False
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                return batch, False
        return batch, True

    def _commit(self, connection: sa.Connection, batch: list[_Pending]) -> None:
        rows = [row for pending in batch for row in pending.rows]
        with connection.begin():
            connection.execute(self.table.insert(), rows)
        self.commits += 1


def _discard(connection: sa.Connection | None) -> None:
    """Close a connection that may be broken; a fresh one is opened for the next batch."""
    if connection is not None:
        try:
            connection.close()
        except sa.exc.SQLAlchemyError:
            logger.debug("prediction log: closing a broken connection failed", exc_info=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
