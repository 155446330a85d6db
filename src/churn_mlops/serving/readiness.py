"""What /health/ready checks: a loaded model, and that each dependency of /predict answers.

The dependencies are the prediction log's database (which also holds the API keys) and, when they
are configured, the rate-limit Redis and the online feature store. Their checks are cached for
`ready_cache_seconds` and shared by concurrent probes, so a probe storm costs each dependency one
query per period; each check gives up after its timeout, so a hung dependency makes the probe slow
by that much, never stuck.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from churn_mlops.errors import ChurnError, first_line
from churn_mlops.serving.deps import Services
from churn_mlops.settings import ServingSettings

logger = logging.getLogger(__name__)
PREDICTION_LOG = "prediction log database"
RATE_LIMIT_STORE = "rate limit store"
ONLINE_STORE = "online feature store"


class Readiness:
    """The roles of the dependencies /predict needs that do not answer, checked at most once a period."""

    def __init__(
        self, services: Services, settings: ServingSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.services = services
        self.cache_seconds = settings.ready_cache_seconds
        self._timeouts = {
            PREDICTION_LOG: settings.database_timeout_seconds,
            RATE_LIMIT_STORE: settings.redis_timeout_seconds,
            ONLINE_STORE: max(settings.database_timeout_seconds, settings.redis_timeout_seconds),
        }
        self._clock = clock
        self._checked: tuple[float, list[str]] | None = None
        self._lock = asyncio.Lock()

    async def unavailable(self) -> list[str]:
        """The dependencies that did not answer their last check ([] when all did)."""
        if (fresh := self._fresh()) is not None:
            return fresh
        async with self._lock:  # the probes that arrive during a check wait for its answer
            if (fresh := self._fresh()) is not None:
                return fresh
            down = await self._check()
            self._checked = (self._clock(), down)
            return down

    def _fresh(self) -> list[str] | None:
        checked = self._checked
        if checked is not None and self._clock() - checked[0] < self.cache_seconds:
            return checked[1]
        return None

    async def _check(self) -> list[str]:
        checks: dict[str, Awaitable[None]] = {
            PREDICTION_LOG: asyncio.to_thread(self.services.predlog.ping),
            RATE_LIMIT_STORE: self.services.limiter.ping(),
        }
        if self.services.online is not None:
            checks[ONLINE_STORE] = self.services.online.ping()
        bounded = [asyncio.wait_for(check, self._timeouts[role] + 1) for role, check in checks.items()]
        results = await asyncio.gather(*bounded, return_exceptions=True)
        down = []
        for role, result in zip(checks, results, strict=True):
            if isinstance(result, ChurnError | TimeoutError):
                logger.warning("not ready, %s unavailable: %s", role, first_line(result))
                down.append(role)
            elif isinstance(result, BaseException):
                raise result
        return down
