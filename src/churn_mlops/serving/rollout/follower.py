"""Each server follows the rollout in force: loads the canary or shadow, judges the canary, reports."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from churn_mlops.errors import ChurnError, first_line
from churn_mlops.models.artifacts import Predictor
from churn_mlops.models.catalog import VersionInfo
from churn_mlops.serving.model import LoadedModel
from churn_mlops.serving.predlog.table import create_log_engine
from churn_mlops.serving.rollout.canary import Canary
from churn_mlops.serving.rollout.shadow import Shadow
from churn_mlops.serving.rollout.state import SHADOW, ActiveRollout, active_rollout, roll_back, store_counts
from churn_mlops.settings import RolloutSettings

logger = logging.getLogger(__name__)
Loader = Callable[[str], tuple[VersionInfo, Predictor]]


class Rollouts:
    """Follows the rollout in force: loads the shadow model when one starts, drops it when it ends."""

    def __init__(
        self, url: str, loader: Loader, *, guards: RolloutSettings | None = None, timeout: float = 5.0
    ) -> None:
        self.engine = create_log_engine(url, timeout)  # the shadow writes beside the log, as it does
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
