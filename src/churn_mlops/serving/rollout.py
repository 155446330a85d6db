"""Rollouts on the model server: a challenger in the shadow of the champion, or as a canary.

The rollout in force is a row of `rollouts` (started and ended by `churn rollout`), so every
worker and replica follows it within `poll_seconds`, without a restart. In canary mode a stable
share of customers (by customer id) is answered by the canary model, each answer naming its
version. In shadow mode the champion still answers every request; each answered request's
customers are also handed to a background thread that scores them with the shadow model and
stores its probability beside the champion's (`shadow_predictions`, by request id). The request
never waits for that: handing over is a queue put, and a full queue drops the shadow's score
(counted), never the answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from churn_mlops.errors import ChurnError, first_line
from churn_mlops.models.artifacts import Predictor
from churn_mlops.models.catalog import VersionInfo
from churn_mlops.serving.model import LoadedModel
from churn_mlops.settings import RolloutSettings
from churn_mlops.sql import create_engine

logger = logging.getLogger(__name__)
Loader = Callable[[str], tuple[VersionInfo, Predictor]]
SHADOW, CANARY = "shadow", "canary"
_SHARES = 10_000  # a canary's fraction is applied in steps of 0.01%
# The chi-square distribution's 99.9th percentile by degrees of freedom (0 to 9), for PSI's noise
# floor: a rollback is drastic, and the guards judge the same canary again at every poll.
CHI2_999 = (0.0, 10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877)
QUEUE_REQUESTS = 10_000  # customers' requests waiting for the shadow; beyond this they are skipped
LINGER_SECONDS = 0.05

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

rollout_counts = sa.Table(
    "rollout_counts",
    metadata,
    sa.Column("rollout_id", sa.BigInteger, primary_key=True),
    sa.Column("server", sa.String(200), primary_key=True),  # host:pid of the worker
    sa.Column("answered", sa.BigInteger, nullable=False),
    sa.Column("failed", sa.BigInteger, nullable=False),
    sa.Column("agreed", sa.BigInteger, nullable=False),  # answers whose decision the champion shares
    sa.Column("updated_at", sa.String(32), nullable=False),
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


class Canary:
    """The model that answers a stable share of customers while a canary runs, and how it fares.

    A scoring that fails is answered by the champion instead (the client never sees it) and
    counted; the guard rules judge the counts, the canary's scoring times and its scores
    against the champion's.
    """

    def __init__(self, model: LoadedModel, fraction: float) -> None:
        self.model, self.fraction = model, fraction
        self.answered = self.failed = self.agreed = 0
        self.seconds: deque[float] = deque(maxlen=2000)  # the latest scoring times
        self.scores = np.zeros((2, 10), dtype=np.int64)  # score histograms: champion, canary

    def takes(self, customer_id: Any, answer_id: str) -> bool:
        """Whether this customer (by id; by answer id without one) is answered by the canary model."""
        key = str(customer_id) if customer_id is not None else answer_id
        return zlib.crc32(key.encode()) % _SHARES < self.fraction * _SHARES

    def observe(self, canary: bool, probabilities: Sequence[float], seconds: float = 0.0) -> None:
        """Count answered scores (and, for the canary, how long its scoring took)."""
        bins = np.minimum((np.asarray(probabilities) * 10).astype(np.int64), 9)
        self.scores[int(canary)] += np.bincount(bins, minlength=10)
        if canary:
            self.answered += len(probabilities)
            self.seconds.append(seconds)

    def agree(self, count: int) -> None:
        """Count canary answers whose decision the champion would have made too."""
        self.agreed += count

    def fail(self, count: int) -> None:
        """Count canary scorings that failed (their customers were answered by the champion)."""
        self.failed += count

    def verdict(self, guards: RolloutSettings) -> str | None:
        """Why the canary must stop, or None while every guard holds."""
        tried = self.answered + self.failed
        if tried < guards.min_requests:
            return None
        if self.failed / tried > guards.max_error_rate:
            limit = f"{guards.max_error_rate:.0%}"
            return f"{self.failed} of {tried} canary scorings failed (guard: at most {limit})"
        p99 = float(np.percentile(self.seconds, 99)) * 1000 if self.seconds else 0.0
        if p99 > guards.max_p99_ms:
            return f"canary scoring p99 {p99:.0f} ms (guard: {guards.max_p99_ms:g} ms)"
        expected, actual = merged_bins(self.scores[0], self.scores[1])
        shift = psi(expected, actual)
        champion, canary = int(expected.sum()), int(actual.sum())
        # Sampling noise alone reaches this PSI in 0.1% of samples this size.
        noise = CHI2_999[len(expected) - 1] * (1 / max(champion, 1) + 1 / max(canary, 1))
        if shift > max(guards.max_score_psi, noise):
            limit = f"{max(guards.max_score_psi, noise):.2f}"
            return f"canary scores drifted from the champion's: PSI {shift:.2f} (guard: {limit})"
        return None


def merged_bins(
    expected: np.ndarray, actual: np.ndarray, share: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Adjacent score bins merged until each holds `share` of the champion's scores: sparse bins
    make PSI swing on a handful of scores."""
    total = expected.sum()
    if total == 0:
        return expected, actual
    merged_e, merged_a, e, a = [], [], 0, 0
    for count_e, count_a in zip(expected, actual, strict=True):
        e, a = e + count_e, a + count_a
        if e >= share * total:
            merged_e.append(e)
            merged_a.append(a)
            e = a = 0
    if e or a:  # the rest joins the last bin
        if merged_e:
            merged_e[-1] += e
            merged_a[-1] += a
        else:
            merged_e.append(e)
            merged_a.append(a)
    return np.asarray(merged_e), np.asarray(merged_a)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two histograms, empty bins floored at 1e-4."""
    if expected.sum() == 0 or actual.sum() == 0:
        return 0.0
    e = np.maximum(expected / expected.sum(), 1e-4)
    a = np.maximum(actual / actual.sum(), 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


def store_counts(engine: sa.Engine, rollout_id: int, answered: int, failed: int, agreed: int = 0) -> None:
    """Replace this worker's counts for the rollout."""
    server = f"{socket.gethostname()}:{os.getpid()}"
    c = rollout_counts
    with engine.begin() as connection:
        connection.execute(c.delete().where(c.c.rollout_id == rollout_id, c.c.server == server))
        connection.execute(
            c.insert().values(
                rollout_id=rollout_id,
                server=server,
                answered=answered,
                failed=failed,
                agreed=agreed,
                updated_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            )
        )


def roll_back(engine: sa.Engine, rollout_id: int, version: str, reason: str) -> bool:
    """End a rollout as rolled back, and fire an alert saying why; False if it had already ended."""
    from churn_mlops.monitoring import tables

    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    with engine.begin() as connection:
        ended = connection.execute(
            rollouts.update()
            .where(rollouts.c.id == rollout_id, rollouts.c.ended_at.is_(None))
            .values(ended_at=now, ended_by="guard", outcome="rolled back", reason=reason)
        ).rowcount
        if ended:
            connection.execute(
                tables.alerts.insert().values(
                    rule="canary_rollback",
                    kind="rollout",
                    window_start=now,
                    model_version=version,
                    severity="critical",
                    state="firing",
                    value=None,
                    threshold=0.0,
                    message=f"canary v{version} rolled back: {reason}",
                    fired_at=now,
                )
            )
    return bool(ended)


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


class Rollouts:
    """Follows the rollout in force: loads the shadow model when one starts, drops it when it ends."""

    def __init__(
        self, url: str, loader: Loader, *, guards: RolloutSettings | None = None, timeout: float = 5.0
    ) -> None:
        self.engine = create_engine(url, timeout)
        self.loader = loader
        self.guards = guards or RolloutSettings()
        self.poll_seconds = self.guards.poll_seconds
        self.shadow: Shadow | None = None  # read on the request path: one attribute load each
        self.canary: Canary | None = None
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
        wanted = rollout.id if rollout is not None else None
        if wanted == self._following:
            return
        previous, self.shadow, self.canary = self.shadow, None, None
        if previous is not None:
            await asyncio.to_thread(previous.close)
        self._following = wanted
        if rollout is not None:
            await self._follow(rollout)

    async def _follow(self, rollout: ActiveRollout) -> None:
        try:
            info, predictor = await asyncio.to_thread(self.loader, rollout.model_version)
        except ChurnError as exc:  # said once: a new rollout tries again
            logger.error(
                "%s v%s cannot be loaded, not following it: %s", rollout.mode, rollout.model_version, exc
            )
            return
        if rollout.mode == SHADOW:
            self.shadow = Shadow(self.engine, info.version, predictor.with_threads(1))
        else:
            predictor.single_row  # noqa: B018 - built now, not on a customer's request
            loaded = LoadedModel(info, predictor, datetime.now(UTC).isoformat(timespec="seconds"))
            self.canary = Canary(loaded, rollout.fraction)
        logger.warning("%s of version %s: following it", rollout.mode, info.version)

    def _read(self) -> ActiveRollout | None:
        with self.engine.connect() as connection:
            return active_rollout(connection)

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await self.guard()
            await self.report()
            await asyncio.sleep(self.poll_seconds)

    async def _report_final(self, canary: Canary) -> None:
        if self._following is not None:
            try:
                await asyncio.to_thread(
                    store_counts, self.engine, self._following, canary.answered, canary.failed
                )
            except sa.exc.SQLAlchemyError as exc:
                logger.warning("canary counts not stored: %s", first_line(exc))

    async def report(self) -> None:
        """Store this worker's counts of the rollout's model (answered or scored, and failed), for
        `churn rollout status` to sum over every server."""
        rollout_id = self._following
        if self.canary is not None:
            counts = (self.canary.answered, self.canary.failed, self.canary.agreed)
        elif self.shadow is not None:
            counts = (self.shadow.scored, self.shadow.skipped, 0)
        else:
            return
        if rollout_id is None:
            return
        try:
            await asyncio.to_thread(store_counts, self.engine, rollout_id, *counts)
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("rollout counts not stored: %s", first_line(exc))

    async def guard(self) -> None:
        """Stop a canary that breaks a guard rule: all traffic back to the champion, an alert fired."""
        canary = self.canary
        reason = canary.verdict(self.guards) if canary is not None else None
        if canary is None or reason is None or self._following is None:
            return
        self.canary = None  # this server at once; the others at their next poll
        await self._report_final(canary)
        try:
            await asyncio.to_thread(roll_back, self.engine, self._following, canary.model.version, reason)
        except sa.exc.SQLAlchemyError as exc:
            logger.error(
                "canary v%s stopped here but not recorded: %s", canary.model.version, first_line(exc)
            )
        logger.error("canary v%s rolled back: %s", canary.model.version, reason)
