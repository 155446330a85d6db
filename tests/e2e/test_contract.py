"""The OpenAPI document is the contract: Schemathesis against the real server process, and 503s
that name the failing service, never where it runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from churn_mlops.serving.keys import KeyStore
from churn_mlops.settings import Settings
from tests.e2e.contract import check_contract, generated_cases
from tests.e2e.servers import server
from tests.faults import redis_server
from tests.integration.serving_fixtures import TrainedHome, make_trained_home

pytestmark = pytest.mark.slow
CASES_PER_OPERATION = 400  # four operations: well over 1,000 generated cases in all


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    return make_trained_home(tmp_path_factory.mktemp("contract"), rows=1000)


@pytest.fixture(scope="module")
def both_scopes(home: TrainedHome) -> str:
    """A key with the predict and admin scopes, so every operation can be answered."""
    key, _ = KeyStore(Settings(home=home.home).serving_database_url).create("fuzzer", ["predict", "admin"])
    return key


@contextmanager
def serving(home: TrainedHome, probe: str = "/health/ready", **env: str) -> Iterator[str]:
    """A `churn serve` process whose `probe` answers 200; killed afterwards."""
    with server(home, probe=probe, **env) as (url, _):
        yield url


def test_the_server_keeps_its_openapi_contract(home: TrainedHome, both_scopes: str, tmp_path: Path) -> None:
    """Schemathesis on every keyed route (`tests.e2e.contract`)."""
    paths = "^/(predict|predict/batch|model|admin/reload)$"
    with serving(home) as url:
        report = check_contract(url, both_scopes, paths, CASES_PER_OPERATION, tmp_path)
    assert "4 selected" in report, report[-5000:]
    assert generated_cases(report) >= 1000, report[-5000:]


def test_a_failing_rate_limit_store_is_named_but_not_located(home: TrainedHome) -> None:
    """When the rate limit's Redis goes down, every prediction is refused (fail closed) with a 503
    that names the rate-limit store, and neither its host nor its port."""
    with redis_server() as redis, serving(home, CHURN_SERVING__REDIS_URL=redis.url) as url:
        headers = {"X-API-Key": home.predict_key}
        assert httpx.post(f"{url}/predict", json=home.customers[0], headers=headers).status_code == 200
        redis.stop()
        answer = httpx.post(f"{url}/predict", json=home.customers[0], headers=headers, timeout=30)
    assert answer.status_code == 503, answer.text
    assert answer.json() == {"detail": "the rate-limit store is unavailable; try again"}
    assert "127.0.0.1" not in answer.text
    assert str(redis.port) not in answer.text
