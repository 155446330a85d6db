"""A shadow: the model scored beside the champion on its own thread, its scores stored by request id."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from churn_mlops.errors import first_line
from churn_mlops.models.artifacts import Predictor
from churn_mlops.serving.rollout.state import shadow_predictions

logger = logging.getLogger(__name__)
PENDING_REQUESTS = 10_000  # requests waiting for the shadow; beyond this their customers are skipped
LINGER_SECONDS = 0.05  # how often the shadow thread takes what was handed over
# Customers scored and stored at a time: the GIL, and on SQLite the serving database's write lock,
# which the prediction log's commits need, are never held for long (a fraction of a millisecond).
CHUNK = 64

Handed = tuple[str, Sequence[Mapping[str, Any]], Sequence[dict[str, Any]]]


class Shadow:
    """Scores handed-over requests with the shadow model on its own thread and stores the scores.

    The hand-over is one append to a deque, atomic under the GIL: no lock and no wake-up on the
    request path. The thread wakes every `LINGER_SECONDS`, takes what is there, and scores and
    stores it in small chunks, yielding between them. Where the OS allows, the thread runs at idle
    priority: it uses only CPU time that the answers leave over, so a saturated server skips
    shadow scores (counted) rather than answering slower.
    """

    def __init__(self, engine: sa.Engine, version: str, predictor: Predictor, batch: int = CHUNK) -> None:
        self.engine, self.version, self.predictor, self.batch = engine, version, predictor, batch
        self.scored = self.failed = 0  # written by the shadow's thread only
        self.dropped = 0  # written by the request path only: no count is lost to a race
        self._pending: deque[Handed] = deque()
        self._closing = threading.Event()
        self._insert = _insert_statement(engine, shadow_predictions)
        self._thread = threading.Thread(target=self._run, name=f"shadow-v{version}", daemon=True)
        self._thread.start()

    def offer(
        self, request_id: str, records: Sequence[Mapping[str, Any]], answers: Sequence[dict[str, Any]]
    ) -> None:
        """Hand over an answered request, which the caller no longer changes; never blocks.

        Past `PENDING_REQUESTS` waiting, the request's customers are skipped and counted.
        """
        if len(self._pending) >= PENDING_REQUESTS:
            self.dropped += len(records)
            return
        self._pending.append((request_id, records, answers))

    @property
    def skipped(self) -> int:
        """Customers handed over whose shadow scores were not stored: dropped or failed."""
        return self.dropped + self.failed

    def close(self, timeout: float = 5.0) -> None:
        """Score what is pending, then stop the thread."""
        self._closing.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        _idle_priority()
        while not self._closing.wait(LINGER_SECONDS):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        """Score and store everything pending, `batch` customers at a time, yielding the GIL and
        the database between chunks."""
        while self._pending:
            self._store(self._score(self._take(self.batch)))
            time.sleep(0)  # a waiting event loop takes the GIL here, not a switch interval later

    def _take(self, customers: int) -> list[Handed]:
        """Pending requests holding about `customers` customers, oldest first."""
        items: list[Handed] = []
        taken = 0
        while self._pending and taken < customers:
            item = self._pending.popleft()
            items.append(item)
            taken += len(item[1])
        return items

    def _score(self, items: list[Handed]) -> list[tuple[Any, ...]]:
        """The shadow's rows for these requests' customers, beside the champion's answers."""
        records = [record for _, batch, _ in items for record in batch]
        answers = [answer for _, _, found in items for answer in found]
        try:
            columns = {name: [record.get(name) for record in records] for name in records[0]}
            probabilities, decisions = self.predictor.predict(columns)
        except Exception as exc:  # a shadow that cannot score, for whatever reason, stays off the answers
            self._skip(len(records), exc)
            return []
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        return [
            (
                answer["request_id"],
                now,
                self.version,
                float(p),
                int(d),
                answer["model_version"],
                float(answer["churn_probability"]),
                int(answer["prediction"]),
            )
            for answer, p, d in zip(answers, probabilities, decisions, strict=True)
        ]

    def _store(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        try:
            with self.engine.begin() as connection:  # the driver's executemany: no per-row compiling
                connection.exec_driver_sql(self._insert, rows)
        except sa.exc.SQLAlchemyError as exc:
            self._skip(len(rows), exc)
            return
        self.scored += len(rows)

    def _skip(self, customers: int, exc: Exception) -> None:
        self.failed += customers
        logger.warning("shadow v%s: %d scores not stored: %s", self.version, customers, first_line(exc))


def _idle_priority() -> None:
    """Run the calling thread only when its CPU is otherwise idle (Linux SCHED_IDLE), else at nice 19."""
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, thread, 19)
        except (AttributeError, OSError) as exc:
            logger.info("the shadow runs at normal priority: %s", exc)


def _insert_statement(engine: sa.Engine, table: sa.Table) -> str:
    """A one-row INSERT of every column but the id, in the driver's own placeholders."""
    placeholder = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    names = [column.name for column in table.columns if column.name != "id"]
    return f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join([placeholder] * len(names))})"
