"""The served traffic by day, for the dashboard: requests by route, status and latency bucket.

Each worker counts the prediction routes' requests in memory (a dict increment on the request
path) and adds its counts to `serving_traffic` every `flush_seconds`, off the event loop. The
rows only ever grow by addition, so any number of workers and replicas write to the same table
and the dashboard reads a day's p50, p99, errors and rate-limited requests from a few rows,
never from the prediction log. Counts not yet flushed when a worker is killed are lost; they are
figures for a chart, not acknowledged predictions.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from churn_mlops.errors import first_line
from churn_mlops.sql import create_engine

logger = logging.getLogger(__name__)

ROUTES = ("/predict", "/predict/batch")
# Upper edges in milliseconds, about 12% apart: a quantile read from them is within that of the truth.
BUCKET_EDGES_MS = tuple(round(0.1 * 1.12**i, 4) for i in range(100))
_DAY_SECONDS = 86_400

metadata = sa.MetaData()
traffic = sa.Table(
    "serving_traffic",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("route", sa.String(64), primary_key=True),
    sa.Column("status", sa.SmallInteger, primary_key=True),
    sa.Column("bucket", sa.SmallInteger, primary_key=True),
    sa.Column("requests", sa.BigInteger, nullable=False),
)

Key = tuple[int, str, int, int]  # (epoch day, route, status, latency bucket)


def bucket_of(milliseconds: float) -> int:
    """The latency bucket of a duration: the first whose upper edge is not below it."""
    return bisect.bisect_left(BUCKET_EDGES_MS, milliseconds)


def bucket_upper_ms(bucket: int) -> float:
    """A bucket's upper edge; the last bucket's is its lower edge (it has no upper one)."""
    return BUCKET_EDGES_MS[min(bucket, len(BUCKET_EDGES_MS) - 1)]


class TrafficRecorder:
    """Counts requests to the prediction routes and adds them to `serving_traffic` now and then."""

    def __init__(self, url: str, *, flush_seconds: float = 10.0, timeout: float = 5.0) -> None:
        self.url = url
        self.flush_seconds = flush_seconds
        self.timeout = timeout
        self._counts: Counter[Key] = Counter()
        self._engine: sa.Engine | None = None
        self._task: asyncio.Task[None] | None = None

    def count(self, route: str, status: int, seconds: float) -> None:
        """One answered request (the middleware calls this for every route; others are ignored)."""
        if route in ROUTES:
            key = (int(time.time()) // _DAY_SECONDS, route, status, bucket_of(seconds * 1000))
            self._counts[key] += 1

    def start(self) -> None:
        """Flush every `flush_seconds` from now on, in the running event loop."""
        self._engine = create_engine(self.url, self.timeout)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the timer and flush what is counted."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush()
        if self._counts:
            logger.warning("%d requests' traffic counts lost at shutdown", sum(self._counts.values()))
        if self._engine is not None:
            self._engine.dispose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except Exception:  # the timer must outlive any one failed flush
                logger.exception("traffic counts not flushed")

    async def flush(self) -> None:
        """Add the counts so far to the table; on a database error keep them for the next try.

        The counts are taken on the event loop, where `count` runs, and written off it.
        """
        if not self._counts or self._engine is None:
            return
        counts, self._counts = self._counts, Counter()
        try:
            await asyncio.to_thread(add_counts, self._engine, counts.items())
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("traffic counts not stored, kept for the next flush: %s", first_line(exc))
            self._counts.update(counts)


def add_counts(engine: sa.Engine, counts: Iterable[tuple[Key, int]]) -> None:
    """Add request counts to their rows in one transaction (an upsert on SQLite and PostgreSQL)."""
    rows = [
        {"day": _day_text(day), "route": route, "status": status, "bucket": bucket, "requests": n}
        for (day, route, status, bucket), n in counts
    ]
    insert = _dialect_insert(engine)(traffic)
    statement = insert.on_conflict_do_update(
        index_elements=["day", "route", "status", "bucket"],
        set_={"requests": traffic.c.requests + insert.excluded.requests},
    )
    with engine.begin() as connection:
        connection.execute(statement, rows)


def _dialect_insert(engine: sa.Engine) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def _day_text(epoch_day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_day * _DAY_SECONDS))
