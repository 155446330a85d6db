"""What the online stores share: a customer's stored features, and the store's interface."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

VIEW = "customers"  # the one Feast feature view, holding every spec feature


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

    async def close(self) -> None:
        """Release the connection."""
        ...


def stored(
    pairs: Iterable[tuple[str, Any]], as_of: datetime | None, features: frozenset[str]
) -> Stored | None:
    """The spec's features among the decoded (name, value) pairs; None when the store holds none."""
    values = {name: value for name, value in pairs if name in features}
    if as_of is None or not values:
        return None
    return Stored(values, as_of)
