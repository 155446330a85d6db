"""The served model: loaded only when verified, swapped atomically, polled for a new champion.

A request takes `holder.current` once and uses that object to the end, so a reload never
changes the model under a request in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from churn_mlops.errors import ChurnError
from churn_mlops.models.artifacts import Predictor
from churn_mlops.models.catalog import VersionInfo

logger = logging.getLogger(__name__)
Loader = Callable[[str], tuple[VersionInfo, Predictor]]
Resolver = Callable[[str], VersionInfo]


@dataclass(frozen=True)
class LoadedModel:
    """A verified model version and when it started serving."""

    info: VersionInfo
    predictor: Predictor
    loaded_at: str

    @property
    def version(self) -> str:
        """The registry version number."""
        return self.info.version

    def score(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[int]]:
        """Probabilities and decisions for canonical records; one record takes the one-row path."""
        if len(records) == 1:
            probability, decision = self.predictor.predict_one(records[0])
            return [probability], [decision]
        probabilities, decisions = self.predictor.predict(_columns(records))
        return probabilities.tolist(), decisions.tolist()

    def risk(self, probability: float) -> str:
        """The risk band of a probability (the Predictor's rule)."""
        return self.predictor.risk(probability)

    def reasons(self, records: Sequence[Mapping[str, Any]], top: int = 5) -> list[list[dict[str, Any]]]:
        """Each record's strongest feature contributions, largest first."""
        return self.predictor.reasons(_columns(records), top)


class ModelHolder:
    """Holds the serving model; loads, reloads and polls an alias."""

    def __init__(self, loader: Loader, resolver: Resolver, alias: str = "champion") -> None:
        self.loader = loader
        self.resolver = resolver
        self.alias = alias
        self.current: LoadedModel | None = None
        self._lock = asyncio.Lock()

    def load(self) -> LoadedModel:
        """Load and verify the alias's version; on failure the current model keeps serving."""
        info, predictor = self.loader(self.alias)
        _ = predictor.single_row  # prepared now, not by the first request
        loaded = LoadedModel(info, predictor, datetime.now(UTC).isoformat(timespec="seconds"))
        self.current = loaded
        logger.info("serving model version %s", info.version, extra={"model_version": info.version})
        return loaded

    async def reload(self) -> tuple[str | None, str]:
        """Load the alias again off the event loop; return the old and new versions."""
        async with self._lock:
            old = self.current.version if self.current else None
            loaded = await asyncio.to_thread(self.load)
            return old, loaded.version

    async def poll(self, seconds: float) -> None:
        """Reload whenever the alias points at another version; runs until cancelled."""
        while True:
            await asyncio.sleep(seconds)
            try:
                target = await asyncio.to_thread(self.resolver, self.alias)
                if self.current is None or target.version != self.current.version:
                    await self.reload()
            except ChurnError as exc:
                logger.warning("model poll failed, still serving %s: %s", self.version_or_none(), exc)

    def version_or_none(self) -> str | None:
        """The serving version, if any."""
        return self.current.version if self.current else None


def _columns(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    return {name: [record[name] for record in records] for name in records[0]}
