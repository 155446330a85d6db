"""Per-key token buckets: `rate` tokens a second, up to `burst`; a request takes one token.

The limiter only decides; answering 429 with Retry-After is the app's job. Pass a key's name,
not its secret, so secrets never reach Redis. `LocalRateLimiter` holds buckets in process memory
(one worker); `RedisRateLimiter` holds them in Redis, so every worker and replica shares them.
A Redis failure raises RateLimitBackendError and the app chooses to fail open or closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from churn_mlops.errors import ChurnError, ConfigError

_MAX_LOCAL_BUCKETS = 10_000

# One atomic step per request. The clock is the Redis server's TIME, so replicas whose own
# clocks disagree still share one bucket; timestamps are whole microseconds, which a Lua
# double holds exactly, and numbers travel as strings because Redis truncates Lua floats.
# Needs Redis 5 or later, which replicates scripts by effect, so TIME may precede writes.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) / 1000000 * rate)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil((burst - tokens) / rate * 1000) + 1000))
return {allowed, string.format('%.17g', tokens), string.format('%.17g', retry)}
"""


class RateLimitBackendError(ChurnError):
    """The shared rate-limit store (Redis) cannot be reached or used."""


@dataclass(frozen=True)
class RateDecision:
    """Whether a request may proceed, how long to wait if not, and the tokens left."""

    allowed: bool
    retry_after: float
    remaining: float


class RateLimiter(Protocol):
    """Decides, per key, whether one more request fits the limit."""

    async def acquire(self, key: str) -> RateDecision:
        """Take one token from the key's bucket if there is one."""
        ...

    async def ping(self) -> None:
        """Raise RateLimitBackendError unless the store answers (nothing to check in-process)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def check_limits(rate: float, burst: int) -> None:
    """ConfigError unless the rate is positive and the burst at least one request."""
    if not rate > 0:
        raise ConfigError(f"rate limit must be above 0 requests per second, not {rate}")
    if burst < 1:
        raise ConfigError(f"rate limit burst must be at least 1 request, not {burst}")


def take(tokens: float, rate: float) -> RateDecision:
    """The decision for a bucket holding `tokens` right now."""
    if tokens >= 1:
        return RateDecision(True, 0.0, tokens - 1)
    return RateDecision(False, (1 - tokens) / rate, tokens)


class LocalRateLimiter:
    """Token buckets in this process's memory; thread-safe, but each worker has its own."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        check_limits(rate, burst)
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    async def acquire(self, key: str) -> RateDecision:
        """Take one token from the key's bucket if there is one."""
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
            decision = take(tokens, self.rate)
            if len(self._buckets) >= _MAX_LOCAL_BUCKETS:
                self._drop_full(now)
            self._buckets[key] = (decision.remaining, now)
        return decision

    async def ping(self) -> None:
        """Always answers: the buckets are in this process."""

    async def close(self) -> None:
        """Nothing to release."""

    def _drop_full(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket, so forgetting it changes nothing.
        refill = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}


class RedisRateLimiter:
    """Token buckets in Redis, shared by every worker and replica; idle buckets expire."""

    def __init__(
        self,
        url: str,
        rate: float,
        burst: int,
        prefix: str = "churn:ratelimit:",
        timeout: float = 1.0,
    ) -> None:
        check_limits(rate, burst)
        self.url = url
        self.rate = rate
        self.burst = burst
        self.prefix = prefix
        import redis.asyncio as aioredis  # only where a Redis URL is configured
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._errors = aioredis.RedisError
        # Every call ends within `timeout`: a connection that broke (Redis restarted) is retried
        # once at once on a fresh one; a timeout is not retried, nor waited out with backoff.
        retry = Retry(NoBackoff(), 1, supported_errors=(aioredis.ConnectionError,))
        try:
            self._client = aioredis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=retry
            )
        except ValueError as exc:
            raise ConfigError(f"{redacted(url)}: not a valid Redis URL ({exc})") from exc
        self._script = self._client.register_script(_TOKEN_BUCKET)

    async def acquire(self, key: str) -> RateDecision:
        """Take one token from the key's bucket if there is one, in one atomic script call."""
        try:
            allowed, remaining, retry = await self._script(
                keys=[self.prefix + key], args=[self.rate, self.burst]
            )
        except self._errors as exc:
            raise RateLimitBackendError(f"rate limit store at {redacted(self.url)}: {exc}") from exc
        return RateDecision(allowed == 1, float(retry), float(remaining))

    async def ping(self) -> None:
        """Raise RateLimitBackendError unless Redis answers a PING within the timeout."""
        try:
            await self._client.ping()
        except self._errors as exc:
            raise RateLimitBackendError(f"rate limit store at {redacted(self.url)}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def make_rate_limiter(redis_url: str | None, rate: float, burst: int, timeout: float = 1.0) -> RateLimiter:
    """A Redis limiter when a URL is given, which holds across workers; else a local one."""
    if redis_url:
        return RedisRateLimiter(redis_url, rate, burst, timeout=timeout)
    return LocalRateLimiter(rate, burst)


def redacted(url: str) -> str:
    """The URL with any password replaced by ***."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
