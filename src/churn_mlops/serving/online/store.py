"""What the online stores share: a customer's stored features, and the store's interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Stored:
    """A customer's features as the online store holds them, and when they were observed."""

    values: dict[str, Any]
    as_of: datetime


class OnlineStore(Protocol):
    """Reads one customer's features by id, straight from Feast's online store."""

    async def read(self, customer_ids: Sequence[str]) -> list[Stored | None]:
        """Each id's stored features, None where the store has none."""
        ...

    async def start(self) -> None:
        """Connect, and raise FeatureStoreError unless the store can be read."""
        ...

    async def ping(self) -> None:
        """Raise FeatureStoreError unless the store answers (what readiness checks)."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


def stored(values: dict[str, Any], as_of: datetime | None) -> Stored | None:
    """A customer's decoded features and their time; None when the store holds none."""
    if as_of is None or not values:
        return None
    return Stored(values, as_of)
