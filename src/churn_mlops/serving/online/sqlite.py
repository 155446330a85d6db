"""Feast's SQLite online store, read directly: one prepared query per customer, read-only.

Feast keeps one row per (entity key, feature) in the table `<project>_customers`, the value a
serialized ValueProto and `event_ts` the observation time as Feast's sqlite adapter wrote it
(whole seconds of the naive UTC time, read back as Feast does). `churn features materialize`
adds an index holding every column the query reads (`lookup_index_sql`), so a lookup reads that
index alone; a store written otherwise is read through Feast's own index on the entity key.

The query runs on the event loop: it takes tens of microseconds, far less than handing it to a
thread. While a materialization holds the file locked the query is not waited for there; it is
asked again from a thread, on a second connection that waits up to `timeout`. A large batch is
read from that thread too.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from churn_mlops.featurestore.layout import LOOKUP_COLUMNS, online_table
from churn_mlops.serving.online.codec import decode_value, entity_key
from churn_mlops.serving.online.errors import FeatureStoreError
from churn_mlops.serving.online.store import Stored, stored

INLINE_KEYS = 8  # customers read on the event loop (about 20 us each); more are read from a thread


class SqliteOnlineStore:
    """Reads customers from Feast's SQLite online store file."""

    def __init__(
        self, path: Path, project: str, join_key: str, features: Sequence[str], timeout: float = 5.0
    ) -> None:
        self.path = path
        self.table = online_table(project)
        self.join_key = join_key
        self.features = frozenset(features)
        self.timeout = timeout
        # one customer's rows, by its serialized entity key
        self.query = f'SELECT {", ".join(LOOKUP_COLUMNS)} FROM "{self.table}" WHERE entity_key = ?'
        self._now: sqlite3.Connection | None = None  # never waits: used on the event loop
        self._patient: sqlite3.Connection | None = None  # waits out a writer: used from a thread
        self._lock = threading.Lock()

    async def start(self) -> None:
        """Open both connections read-only and check that Feast's table is there."""
        self._now = self._connect(0.0)
        self._patient = self._connect(self.timeout)
        try:
            self._patient.execute(self.query, (b"",)).fetchall()  # waits out a materialization
        except sqlite3.Error as exc:
            await self.close()
            raise FeatureStoreError(
                f"online store {self.path}: cannot read table {self.table} ({exc}); "
                "run `churn features materialize`"
            ) from exc

    async def read(self, customer_ids: Sequence[str]) -> list[Stored | None]:
        """Each id's stored features, None where the table has no row for it."""
        keys = [entity_key(self.join_key, customer_id) for customer_id in customer_ids]
        if len(keys) > INLINE_KEYS:  # a large batch would hold the event loop for milliseconds
            return [self._stored(found) for found in await asyncio.to_thread(self._waiting, keys)]
        try:
            rows = self._rows(self._connection(self._now), keys)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise self._error(exc) from exc
            rows = await asyncio.to_thread(self._waiting, keys)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return [self._stored(found) for found in rows]

    async def ping(self) -> None:
        """Read the table from a thread; FeatureStoreError if the store cannot be read."""
        await asyncio.to_thread(self._waiting, [b""])

    async def close(self) -> None:
        """Close both connections."""
        for connection in (self._now, self._patient):
            if connection is not None:
                connection.close()
        self._now = self._patient = None

    def _connect(self, timeout: float) -> sqlite3.Connection:
        if not self.path.is_file():
            raise FeatureStoreError(
                f"online store {self.path}: no such file; run `churn features materialize`"
            )
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        try:
            return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _waiting(self, keys: list[bytes]) -> list[list[Any]]:
        with self._lock:
            try:
                return self._rows(self._connection(self._patient), keys)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _rows(self, connection: sqlite3.Connection, keys: list[bytes]) -> list[list[Any]]:
        return [connection.execute(self.query, (key,)).fetchall() for key in keys]

    def _stored(self, rows: list[Any]) -> Stored | None:
        features = self.features
        values = {name: decode_value(value) for name, value, _ in rows if name in features}
        stamps = {ts for _, _, ts in rows if ts is not None}  # one per write: the same in every row
        return stored(values, max(map(_event_time, stamps), default=None))

    def _connection(self, connection: sqlite3.Connection | None) -> sqlite3.Connection:
        if connection is None:
            raise FeatureStoreError(f"online store {self.path}: not open")
        return connection

    def _error(self, exc: sqlite3.Error) -> FeatureStoreError:
        return FeatureStoreError(f"online store {self.path}: {exc}")


@functools.lru_cache(maxsize=4096)  # a materialization writes one time for all its customers
def _event_time(value: Any) -> datetime:
    """`event_ts` as Feast reads it: whole seconds through the local clock, taken as UTC."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(int(value)).replace(tzinfo=UTC)
    found = datetime.fromisoformat(value.decode() if isinstance(value, bytes) else str(value))
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)
