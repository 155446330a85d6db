"""Rollouts on the model server: a challenger scored in the shadow of the champion.

The rollout in force is a row of `rollouts` (started and ended by `churn rollout`), so every
worker and replica follows it within `poll_seconds`, without a restart. In shadow mode the
champion still answers every request; each answered request's customers are also handed to a
background thread that scores them with the shadow model and stores its probability beside the
champion's (`shadow_predictions`, by request id). The request never waits for that: handing
over is a queue put, and a full queue drops the shadow's score (counted), never the answer.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from churn_mlops.errors import ChurnError, first_line
from churn_mlops.models.artifacts import Predictor
from churn_mlops.models.catalog import VersionInfo
from churn_mlops.sql import create_engine

logger = logging.getLogger(__name__)
Loader = Callable[[str], tuple[VersionInfo, Predictor]]
SHADOW = "shadow"
QUEUE_REQUESTS = 10_000  # customers' requests waiting for the shadow; beyond this they are skipped

metadata = sa.MetaData()
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("champion_version", sa.String(32), nullable=False),
    sa.Column("fraction", sa.Float, nullable=False),
    sa.Column("started_at", sa.String(32), nullable=False),
    sa.Column("started_by", sa.String(100), nullable=False),
    sa.Column("ended_at", sa.String(32), nullable=True),
    sa.Column("ended_by", sa.String(100), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
)
shadow_predictions = sa.Table(
    "shadow_predictions",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("prediction", sa.SmallInteger, nullable=False),
    sa.Column("champion_version", sa.String(32), nullable=False),
    sa.Column("champion_probability", sa.Float, nullable=False),
    sa.Column("champion_prediction", sa.SmallInteger, nullable=False),
)


@dataclass(frozen=True)
class ActiveRollout:
    """The rollout in force: its mode and the model it tries."""

    id: int
    mode: str
    model_version: str
    champion_version: str
    fraction: float


def active_rollout(connection: sa.Connection) -> ActiveRollout | None:
    """The rollout that has started and not ended, if any."""
    r = rollouts
    row = connection.execute(
        sa.select(r.c.id, r.c.mode, r.c.model_version, r.c.champion_version, r.c.fraction)
        .where(r.c.ended_at.is_(None))
        .order_by(r.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else ActiveRollout(int(row[0]), row[1], row[2], row[3], float(row[4]))


class Shadow:
    """Scores handed-over requests with the shadow model on its own thread and stores the scores."""

    def __init__(self, engine: sa.Engine, version: str, predictor: Predictor, batch: int = 256) -> None:
        self.engine, self.version, self.predictor, self.batch = engine, version, predictor, batch
        self.skipped = 0
        self._queue: queue.Queue[tuple[str, list[Mapping[str, Any]], list[dict[str, Any]]] | None] = (
            queue.Queue(QUEUE_REQUESTS)
        )
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
                {
                    "request_id": answer["request_id"],
                    "at": now,
                    "model_version": self.version,
                    "probability": float(p),
                    "prediction": int(d),
                    "champion_version": answer["model_version"],
                    "champion_probability": float(answer["churn_probability"]),
                    "champion_prediction": int(answer["prediction"]),
                }
                for answer, p, d in zip(answers, probabilities, decisions, strict=True)
            ]
            with self.engine.begin() as connection:
                connection.execute(shadow_predictions.insert(), rows)
        except (ChurnError, sa.exc.SQLAlchemyError, ValueError) as exc:
            self.skipped += len(records)
            logger.warning(
                "shadow v%s: %d scores not stored: %s", self.version, len(records), first_line(exc)
            )


class Rollouts:
    """Follows the rollout in force: loads the shadow model when one starts, drops it when it ends."""

    def __init__(self, url: str, loader: Loader, *, poll_seconds: float = 2.0, timeout: float = 5.0) -> None:
        self.engine = create_engine(url, timeout)
        self.loader = loader
        self.poll_seconds = poll_seconds
        self.shadow: Shadow | None = None  # read on the request path: one attribute load
        self._task: asyncio.Task[None] | None = None
        self._following: int | None = None

    def start(self) -> None:
        """Follow the rollouts from now on, in the running event loop."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop following, and let the shadow finish what it was handed."""
        if self._task is not None:
            self._task.cancel()
        shadow, self.shadow = self.shadow, None
        if shadow is not None:
            await asyncio.to_thread(shadow.close)
        self.engine.dispose()

    async def refresh(self) -> None:
        """Read the rollout in force and follow it (the poll calls this; tests may too)."""
        try:
            rollout = await asyncio.to_thread(self._read)
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("rollout state unreadable, keeping the current one: %s", first_line(exc))
            return
        wanted = rollout.id if rollout is not None and rollout.mode == SHADOW else None
        if wanted == self._following:
            return
        previous, self.shadow = self.shadow, None
        if previous is not None:
            await asyncio.to_thread(previous.close)
        self._following = None
        if rollout is not None and wanted is not None:
            try:
                info, predictor = await asyncio.to_thread(self.loader, rollout.model_version)
            except ChurnError as exc:  # said once: a new rollout tries again
                logger.error("shadow v%s cannot be loaded, not shadowing: %s", rollout.model_version, exc)
                self._following = wanted
                return
            self.shadow = Shadow(self.engine, info.version, predictor.with_threads(1))
            logger.warning("shadowing the champion with version %s", info.version)
        self._following = wanted

    def _read(self) -> ActiveRollout | None:
        with self.engine.connect() as connection:
            return active_rollout(connection)

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.poll_seconds)
