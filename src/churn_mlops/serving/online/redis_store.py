"""Feast's Redis online store, read directly: one HGETALL per customer, pipelined for a batch.

Feast keeps each entity in one hash under the serialized entity key followed by the project
name; each feature's field is the murmur3 hash of "customers:<feature>" and `_ts:customers`
holds the observation time as a protobuf Timestamp. The redis package is imported only here,
so only where a Redis online store is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from churn_mlops.featurestore.layout import FEATURE_VIEW
from churn_mlops.serving.online.codec import decode_timestamp, decode_value, entity_key, feature_field
from churn_mlops.serving.online.errors import FeatureStoreError
from churn_mlops.serving.online.store import Stored, stored
from churn_mlops.serving.ratelimit import redacted

_TIMESTAMP = f"_ts:{FEATURE_VIEW}".encode()


class RedisOnlineStore:
    """Reads customers from Feast's Redis online store."""

    def __init__(
        self, url: str, project: str, join_key: str, features: Sequence[str], timeout: float = 1.0
    ) -> None:
        self.url = url
        self.project = project.encode()
        self.join_key = join_key
        self.names = {feature_field(FEATURE_VIEW, name): name for name in features}
        self.timeout = timeout
        self._client: Any = None
        self._errors: tuple[type[Exception], ...] = ()

    async def start(self) -> None:
        """Connect and PING; FeatureStoreError naming the store (never its password) otherwise."""
        import redis.asyncio as aioredis  # only where a Redis online store is configured

        self._errors = (aioredis.RedisError,)
        try:
            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
            await self._client.ping()
        except ValueError as exc:
            raise FeatureStoreError(
                f"online store {redacted(self.url)}: not a valid Redis URL ({exc})"
            ) from exc
        except self._errors as exc:
            await self.close()
            raise FeatureStoreError(f"online store at {redacted(self.url)}: {exc}") from exc

    async def read(self, customer_ids: Sequence[str]) -> list[Stored | None]:
        """Each id's stored features, None where Redis holds no hash for it."""
        if self._client is None:
            raise FeatureStoreError(f"online store at {redacted(self.url)}: not connected")
        keys = [entity_key(self.join_key, customer_id) + self.project for customer_id in customer_ids]
        try:
            if len(keys) == 1:
                hashes = [await self._client.hgetall(keys[0])]
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hgetall(key)
                    hashes = await pipe.execute()
        except self._errors as exc:
            raise FeatureStoreError(f"online store at {redacted(self.url)}: {exc}") from exc
        return [self._stored(found) for found in hashes]

    async def ping(self) -> None:
        """PING the store; FeatureStoreError naming it (never its password) if it does not answer."""
        if self._client is None:
            raise FeatureStoreError(f"online store at {redacted(self.url)}: not connected")
        try:
            await self._client.ping()
        except self._errors as exc:
            raise FeatureStoreError(f"online store at {redacted(self.url)}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _stored(self, fields: dict[bytes, bytes]) -> Stored | None:
        names, stamp = self.names, fields.get(_TIMESTAMP)
        values = {names[field]: decode_value(value) for field, value in fields.items() if field in names}
        return stored(values, decode_timestamp(stamp) if stamp else None)
