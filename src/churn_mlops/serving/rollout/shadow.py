"""A shadow: the model scored beside the champion on its own thread, its scores stored by request id."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from churn_mlops.errors import ChurnError, first_line
from churn_mlops.models.artifacts import Predictor
from churn_mlops.serving.rollout.state import shadow_predictions

logger = logging.getLogger(__name__)
QUEUE_REQUESTS = 10_000  # customers' requests waiting for the shadow; beyond this they are skipped
LINGER_SECONDS = 0.05


class Shadow:
    """Scores handed-over requests with the shadow model on its own thread and stores the scores."""

    def __init__(self, engine: sa.Engine, version: str, predictor: Predictor, batch: int = 1024) -> None:
        self.engine, self.version, self.predictor, self.batch = engine, version, predictor, batch
        self.scored = self.skipped = 0
        self._queue: queue.Queue[tuple[str, list[Mapping[str, Any]], list[dict[str, Any]]] | None] = (
            queue.Queue(QUEUE_REQUESTS)
        )
        self._insert = _insert_statement(engine, shadow_predictions)
        self._thread = threading.Thread(target=self._run, name=f"shadow-v{version}", daemon=True)
        self._thread.start()

    def offer(
        self, request_id: str, records: Sequence[Mapping[str, Any]], answers: Sequence[dict[str, Any]]
    ) -> None:
        """Hand over an answered request; never blocks (a full queue skips the shadow's score)."""
        try:
            self._queue.put_nowait((request_id, list(records), list(answers)))
        except queue.Full:
            self.skipped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is not None:
                time.sleep(LINGER_SECONDS)  # gather a batch: one scoring and one insert for many requests
            items = [first]
            while first is not None and len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            done = [item for item in items if item is not None]
            if done:
                self._score(done)
            if any(item is None for item in items):
                return

    def _score(self, items: list[tuple[str, list[Mapping[str, Any]], list[dict[str, Any]]]]) -> None:
        records = [record for _, batch, _ in items for record in batch]
        answers = [answer for _, _, found in items for answer in found]
        try:
            columns = {name: [record.get(name) for record in records] for name in records[0]}
            probabilities, decisions = self.predictor.predict(columns)
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            rows = [
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
            with self.engine.begin() as connection:  # the driver's executemany: no per-row compiling
                connection.exec_driver_sql(self._insert, rows)
            self.scored += len(rows)
        except (ChurnError, sa.exc.SQLAlchemyError, ValueError) as exc:
            self.skipped += len(records)
            logger.warning(
                "shadow v%s: %d scores not stored: %s", self.version, len(records), first_line(exc)
            )


def _insert_statement(engine: sa.Engine, table: sa.Table) -> str:
    """A one-row INSERT of every column but the id, in the driver's own placeholders."""
    placeholder = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    names = [column.name for column in table.columns if column.name != "id"]
    return f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join([placeholder] * len(names))})"
