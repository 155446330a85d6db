"""`churn serve` with failing dependencies: a start that fails says why in one line and exits
non-zero with any number of workers; a dependency that fails later makes /health/ready and
/predict answer 503 without naming where it runs, and the server recovers once it is back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from churn_mlops.serving.keys import KeyStore
from tests.e2e.servers import server
from tests.faults import FreezableProxy, HungServer, free_port, redis_server
from tests.integration.serving_fixtures import TrainedHome, make_trained_home

pytestmark = pytest.mark.slow


def _serve(home: Path, workers: int, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `churn serve` to its end (it must end by itself: its start fails)."""
    command = [sys.executable, "-m", "churn_mlops", "serve", "--port", str(free_port())]
    return subprocess.run(
        [*command, "--workers", str(workers)],
        env={**os.environ, "CHURN_HOME": str(home), "COLUMNS": "80", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_one_line_failure(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, f"exit code 0 after a failed start: {result.stderr[-2000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{result.stderr[-3000:]}"
    for part in expected:
        assert part in lines[0]
    assert "hunter2" not in result.stderr + result.stdout
    return lines[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_server_whose_database_is_unreachable_exits_nonzero_in_one_line(
    tmp_path: Path, workers: int
) -> None:
    url = f"postgresql://churn:hunter2@127.0.0.1:{free_port()}/test"
    result = _serve(tmp_path / "home", workers, CHURN_SERVING__DATABASE_URL=url)
    _assert_one_line_failure(result, "error:", "Connection refused", "churn:***@")


def test_a_server_whose_database_hangs_gives_up_at_its_timeout(tmp_path: Path) -> None:
    with HungServer() as hung:
        url = f"postgresql://churn:hunter2@127.0.0.1:{hung.port}/test"
        env = {"CHURN_SERVING__DATABASE_URL": url, "CHURN_SERVING__DATABASE_TIMEOUT_SECONDS": "2"}
        result = _serve(tmp_path / "home", 2, **env)
    _assert_one_line_failure(result, "error:", "timeout")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CHURN_SERVING__REDIS_URL": "redis://:hunter2@127.0.0.1:notaport/0"}, "not a valid Redis URL"),
        ({"CHURN_SERVING__REDIS_URL": "redis://:hunter2@127.0.0.1:{port}/0"}, "rate limit store"),
        ({"CHURN_SERVING__PORT": "eighty"}, "serving.port"),
        ({"CHURN_DATA__SPEC": "{home}/no-such-spec.yaml"}, "no-such-spec.yaml"),
    ],
    ids=["invalid-redis-url", "unreachable-redis", "bad-setting", "missing-spec"],
)
def test_other_failed_starts_exit_nonzero_in_one_line(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    home = tmp_path / "home"
    filled = {name: value.format(port=free_port(), home=home) for name, value in env.items()}
    _assert_one_line_failure(_serve(home, 2, **filled), "error:", expected)


# `churn serve` without its pre-flight check, as when a worker's start fails after the parent's
# check passed (the database went away in between).
WORKERS_ONLY = """
import sys
from churn_mlops.cli.serve import run_server
from churn_mlops.errors import ChurnError
from churn_mlops.settings import get_settings

try:
    run_server(get_settings(), "127.0.0.1", int(sys.argv[1]), int(sys.argv[2]))
except ChurnError as exc:
    sys.exit(f"error: {exc}")
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_that_fail_to_start_end_the_server_nonzero_without_a_traceback(
    tmp_path: Path, workers: int
) -> None:
    url = f"postgresql://churn:hunter2@127.0.0.1:{free_port()}/test"
    env = {**os.environ, "CHURN_HOME": str(tmp_path / "home"), "CHURN_SERVING__DATABASE_URL": url}
    command = [sys.executable, "-c", WORKERS_ONLY, str(free_port()), str(workers)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "cannot start: API key store at postgresql+psycopg://churn:***@" in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_a_missing_champion_is_not_a_failed_start(tmp_path: Path) -> None:
    """The server starts not ready and waits for a champion, as before."""
    home = TrainedHome(tmp_path / "empty", "", "", [])
    port = free_port()
    command = [sys.executable, "-m", "churn_mlops", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=home.environment(), stderr=subprocess.PIPE, text=True)
    try:
        answer = _poll(lambda: httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5), {503})
        assert answer.json()["detail"] == "no verified model loaded"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "not ready until a champion loads" in stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """One trained home for the recovery tests."""
    return make_trained_home(tmp_path_factory.mktemp("failures"))


def test_redis_down_makes_the_server_not_ready_and_it_recovers(trained: TrainedHome) -> None:
    with redis_server() as redis:
        env = {"CHURN_SERVING__REDIS_URL": redis.url, "CHURN_SERVING__REDIS_TIMEOUT_SECONDS": "0.5"}
        with server(trained, workers=2, **env) as (url, _):
            assert _predict(url, trained).status_code == 200
            redis.stop()
            refused = _predict(url, trained)
            assert refused.status_code == 503
            _assert_no_address(refused, redis.port)
            not_ready = _poll(lambda: httpx.get(f"{url}/health/ready", timeout=30), {503})
            assert not_ready.json()["detail"] == "rate limit store unavailable"
            _assert_no_address(not_ready, redis.port)
            redis.start()
            _poll(lambda: httpx.get(f"{url}/health/ready", timeout=30), {200})
            assert _predict(url, trained).status_code == 200


@pytest.fixture
def postgres_schema(postgres_engine: sa.Engine) -> Iterator[str]:
    """A new PostgreSQL schema, dropped afterwards."""
    schema = f"churn_fail_{uuid.uuid4().hex[:10]}"
    with postgres_engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield schema
    with postgres_engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.mark.postgres
def test_a_hung_prediction_log_database_is_a_quick_503_and_the_server_recovers(
    trained: TrainedHome, postgres_engine: sa.Engine, postgres_schema: str
) -> None:
    """The database stops answering mid-conversation (it still accepts and acknowledges): each
    request gets its 503 once the timeout has passed, not when the client gives up."""
    with FreezableProxy(postgres_engine.url.port or 5432) as proxy:
        proxied = postgres_engine.url.set(port=proxy.port)
        proxied = proxied.update_query_dict({"options": f"-csearch_path={postgres_schema}"})
        database = proxied.render_as_string(hide_password=False)
        key, _ = KeyStore(database).create("client", ["predict"])
        home = TrainedHome(trained.home, key, trained.admin_key, trained.customers)
        env = {"CHURN_SERVING__DATABASE_URL": database, "CHURN_SERVING__DATABASE_TIMEOUT_SECONDS": "2"}
        with server(home, **env) as (url, _):
            try:
                assert _predict(url, home).status_code == 200
                proxy.freeze()
                refused = _predict(url, home)  # the client would wait 30 s: the server must not
                assert refused.status_code == 503
                _assert_no_address(refused, proxy.port)
                not_ready = _poll(lambda: httpx.get(f"{url}/health/ready", timeout=30), {503})
                assert not_ready.json()["detail"] == "prediction log database unavailable"
            finally:
                proxy.thaw()
            _poll(lambda: httpx.get(f"{url}/health/ready", timeout=30), {200})
            assert _predict(url, home).status_code == 200


def _predict(url: str, home: TrainedHome) -> httpx.Response:
    headers = {"X-API-Key": home.predict_key}
    return httpx.post(f"{url}/predict", json=home.customers[0], headers=headers, timeout=30)


def _poll(ask: Callable[[], httpx.Response], statuses: set[int], seconds: float = 60) -> httpx.Response:
    """Ask until the answer has one of the statuses."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            answer = ask()
            if answer.status_code in statuses or time.monotonic() > deadline:
                assert answer.status_code in statuses, answer.text
                return answer
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _assert_no_address(answer: httpx.Response, port: int) -> None:
    assert "127.0.0.1" not in answer.text
    assert str(port) not in answer.text
