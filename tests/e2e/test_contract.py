"""The OpenAPI document is the contract: Schemathesis against the real server process, and 503s
that name the failing service, never where it runs."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from churn_mlops.serving.keys import KeyStore
from churn_mlops.settings import Settings
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
    """Schemathesis, with all its default checks, on every keyed route; its coverage phase is left
    out (it crashes on Python 3.11.7) and its example database is kept out of the tree."""
    with serving(home) as url:
        command = [
            *(sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json"),
            *("--phases", "examples,fuzzing", "--max-examples", str(CASES_PER_OPERATION)),
            *("--include-path-regex", "^/(predict|predict/batch|model|admin/reload)$"),
            *("--header", f"X-API-Key: {both_scopes}", "--generation-database", "none"),
            "--no-color",
        ]
        run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20_000:]
    assert "4 selected" in report, report[-5000:]
    generated = re.search(r"(\d+) generated", report)
    assert generated is not None, report[-5000:]
    assert int(generated[1]) >= 1000, report[-5000:]


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
