"""Fixtures of the integration tests: a trained home for the serving tests, the machine's Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from churn_mlops.settings import get_settings
from tests.conftest import require_service
from tests.integration.serving_fixtures import TrainedHome, make_trained_home

REDIS_URL = os.environ.get("CHURN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis server; skipped when absent, a failure in CI."""
    import redis

    from churn_mlops.serving.ratelimit import redacted

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        require_service(f"Redis at {redacted(REDIS_URL)}", str(exc).splitlines()[0])
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """One trained home for the whole session (training takes seconds)."""
    return make_trained_home(tmp_path_factory.mktemp("serving"))


@pytest.fixture
def home(trained_home: TrainedHome, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrainedHome]:
    """The trained home as CHURN_HOME, with small batches so every scoring run streams several."""
    monkeypatch.setenv("CHURN_HOME", str(trained_home.home))
    monkeypatch.setenv("CHURN_BATCH__BATCH_ROWS", "1000")
    get_settings.cache_clear()
    yield trained_home
    get_settings.cache_clear()
