"""Token buckets: exact local arithmetic on a fake clock, and one limit shared through real Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import redis

from churn_mlops.errors import ConfigError
from churn_mlops.serving.ratelimit import (
    LocalRateLimiter,
    RateDecision,
    RateLimitBackendError,
    RateLimiter,
    RedisRateLimiter,
    make_rate_limiter,
)
from tests.faults import HungServer, redis_server

# One worker process: connect, say ready, wait for "go", then acquire as fast as it can.
WORKER = """
import asyncio, json, sys, time
from churn_mlops.serving.ratelimit import RedisRateLimiter

async def main(url, prefix, rate, burst, seconds):
    limiter = RedisRateLimiter(url, rate, burst, prefix=prefix)
    await limiter.acquire("warm-up")
    print("ready", flush=True)
    sys.stdin.readline()
    allowed, attempts, first = 0, 0, time.time()
    while (last := time.time()) < first + seconds:
        allowed += (await limiter.acquire("shared")).allowed
        attempts += 1
    await limiter.close()
    print(json.dumps({"allowed": allowed, "attempts": attempts, "first": first, "last": last}))

url, prefix, rate, burst, seconds = sys.argv[1:]
asyncio.run(main(url, prefix, float(rate), int(burst), float(seconds)))
"""


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, as the server does."""
    return "asyncio"


async def acquire_all(limiter: RateLimiter, key: str, times: int) -> list[RateDecision]:
    """Acquire `times` tokens in a row for one key."""
    return [await limiter.acquire(key) for _ in range(times)]


@asynccontextmanager
async def open_limiter(url: str, prefix: str, rate: float, burst: int) -> AsyncIterator[RedisRateLimiter]:
    """A Redis limiter, closed after use."""
    limiter = RedisRateLimiter(url, rate, burst, prefix=prefix)
    try:
        yield limiter
    finally:
        await limiter.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards."""
    name = f"churn:test:{uuid.uuid4().hex[:10]}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        stale = list(client.scan_iter(match=name + "*"))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


@pytest.mark.anyio
async def test_local_burst_then_denials_with_exact_retry_after() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(rate=2.0, burst=3, clock=clock)
    decisions = await acquire_all(limiter, "web-app", 4)
    assert decisions[:3] == [RateDecision(True, 0.0, r) for r in (2.0, 1.0, 0.0)]
    assert decisions[3] == RateDecision(False, 0.5, 0.0)
    clock.now += 0.25
    assert await limiter.acquire("web-app") == RateDecision(False, 0.25, 0.5)
    clock.now += 0.25
    assert await limiter.acquire("web-app") == RateDecision(True, 0.0, 0.0)


@pytest.mark.anyio
async def test_local_refills_at_the_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(rate=4.0, burst=2, clock=clock)
    assert all(d.allowed for d in await acquire_all(limiter, "web-app", 2))
    clock.now += 0.25
    assert await limiter.acquire("web-app") == RateDecision(True, 0.0, 0.0)
    assert await limiter.acquire("web-app") == RateDecision(False, 0.25, 0.0)
    clock.now += 60.0
    assert [d.allowed for d in await acquire_all(limiter, "web-app", 3)] == [True, True, False]


@pytest.mark.anyio
async def test_local_buckets_are_per_key() -> None:
    limiter = LocalRateLimiter(rate=1.0, burst=1, clock=FakeClock())
    assert (await limiter.acquire("a")).allowed
    assert not (await limiter.acquire("a")).allowed
    assert (await limiter.acquire("b")).allowed


def test_limits_must_make_sense() -> None:
    with pytest.raises(ConfigError, match="rate"):
        LocalRateLimiter(rate=0.0, burst=1)
    with pytest.raises(ConfigError, match="burst"):
        make_rate_limiter(None, rate=1.0, burst=0)
    assert isinstance(make_rate_limiter(None, 1.0, 1), LocalRateLimiter)


@pytest.mark.anyio
async def test_redis_burst_then_denials(redis_url: str, prefix: str) -> None:
    async with open_limiter(redis_url, prefix, rate=1.0, burst=5) as limiter:
        decisions = await acquire_all(limiter, "web-app", 6)
        assert [d.allowed for d in decisions] == [True] * 5 + [False]
        assert [d.remaining for d in decisions[:5]] == pytest.approx([4, 3, 2, 1, 0], abs=0.01)
        assert decisions[5].retry_after == pytest.approx(1.0, abs=0.05)
        assert (await limiter.acquire("other")).allowed


@pytest.mark.anyio
async def test_redis_refills_and_idle_buckets_expire(redis_url: str, prefix: str) -> None:
    async with open_limiter(redis_url, prefix, rate=20.0, burst=2) as limiter:
        assert [d.allowed for d in await acquire_all(limiter, "web-app", 3)] == [True, True, False]
        await asyncio.sleep(0.06)
        assert (await limiter.acquire("web-app")).allowed
    client = redis.Redis.from_url(redis_url)
    try:
        ttl_ms = client.pttl(prefix + "web-app")
    finally:
        client.close()
    assert 0 < ttl_ms <= 2 / 20 * 1000 + 1000


@pytest.mark.anyio
async def test_make_rate_limiter_with_a_url_shares_through_redis(redis_url: str) -> None:
    first = make_rate_limiter(redis_url, rate=0.5, burst=1)
    second = make_rate_limiter(redis_url, rate=0.5, burst=1)
    try:
        assert isinstance(first, RedisRateLimiter)
        key = f"test-{uuid.uuid4().hex}"  # its bucket expires three seconds after the test
        assert (await first.acquire(key)).allowed
        assert not (await second.acquire(key)).allowed
    finally:
        await first.close()
        await second.close()


@pytest.mark.anyio
async def test_an_unreachable_redis_is_a_clear_error_without_the_password() -> None:
    async with open_limiter("redis://:hunter2@127.0.0.1:1/0", "x:", rate=1.0, burst=1) as limiter:
        with pytest.raises(RateLimitBackendError, match=r"127\.0\.0\.1:1") as raised:
            await limiter.acquire("web-app")
    assert "hunter2" not in str(raised.value)
    assert ":***@" in str(raised.value)


def start_workers(count: int, args: list[str]) -> list[subprocess.Popen[str]]:
    """Start worker processes and wait until each has connected to Redis."""
    command = [sys.executable, "-c", WORKER, *args]
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
    return workers


@pytest.mark.slow
def test_the_limit_holds_across_two_worker_processes(redis_url: str, prefix: str) -> None:
    rate, burst, seconds = 40.0, 20, 2.0
    workers = start_workers(2, [redis_url, prefix, str(rate), str(burst), str(seconds)])
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    reports = []
    for worker in workers:
        stdout, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0
        reports.append(json.loads(stdout))
    elapsed = max(r["last"] for r in reports) - min(r["first"] for r in reports)
    allowed = sum(r["allowed"] for r in reports)
    ceiling = burst + rate * elapsed
    assert all(r["attempts"] > ceiling for r in reports), "each worker alone pushes past the limit"
    assert all(r["allowed"] > 0 for r in reports), "both workers drew from the bucket"
    assert allowed <= ceiling + 2, (allowed, ceiling, reports)
    assert allowed >= burst + rate * elapsed * 0.8, "the shared bucket still grants the rate"


@pytest.mark.anyio
async def test_a_hung_redis_fails_within_the_timeout_without_retrying() -> None:
    """A Redis that accepts and never answers costs a request one timeout: no retries, no backoff."""
    with HungServer() as hung:
        limiter = RedisRateLimiter(f"redis://127.0.0.1:{hung.port}/0", 1.0, 1, timeout=0.5)
        try:
            with pytest.raises(RateLimitBackendError, match="Timeout"):
                await limiter.acquire("web-app")
            assert len(hung.accepted) == 1, "the timed-out call was retried"
            with pytest.raises(RateLimitBackendError):
                await limiter.ping()
        finally:
            await limiter.close()


@pytest.mark.anyio
async def test_the_limiter_recovers_when_its_redis_comes_back() -> None:
    with redis_server() as server:
        limiter = RedisRateLimiter(server.url, 100.0, 100, timeout=0.5)
        try:
            assert (await limiter.acquire("web-app")).allowed
            await limiter.ping()
            server.stop()
            with pytest.raises(RateLimitBackendError):
                await limiter.acquire("web-app")
            with pytest.raises(RateLimitBackendError):
                await limiter.ping()
            server.start()
            await limiter.ping()
            assert (await limiter.acquire("web-app")).allowed
        finally:
            await limiter.close()


@pytest.mark.anyio
async def test_the_local_limiter_always_answers_its_ping() -> None:
    await LocalRateLimiter(1.0, 1).ping()
