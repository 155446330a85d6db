"""The model server as a real process: hot reload under load, tampering, SIGKILL, two workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from churn_mlops.models.registry import Registry
from churn_mlops.pipeline.promotion import promote
from churn_mlops.serving.keys import KeyStore
from churn_mlops.settings import Settings
from tests.conftest import require_service
from tests.e2e.servers import server, wait_until_ok
from tests.faults import free_port
from tests.integration.serving_fixtures import TrainedHome, make_trained_home

pytestmark = pytest.mark.slow
REDIS_URL = os.environ.get("CHURN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Hammer:
    """Threads posting customers until stopped, recording every answer."""

    def __init__(self, url: str, key: str, customers: list[dict[str, Any]], threads: int = 4) -> None:
        self.url, self.key, self.customers = url, key, customers
        self.results: list[tuple[int, str, str | None]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30, headers={"X-API-Key": self.key}) as client:
            n = 0
            while not self._stop.is_set():
                request_id = f"w{worker}-{n}-{uuid.uuid4().hex[:6]}"
                n += 1
                try:
                    response = client.post(
                        "/predict",
                        json=self.customers[n % len(self.customers)],
                        headers={"X-Request-ID": request_id},
                    )
                    version = response.json().get("model_version") if response.status_code == 200 else None
                    self.results.append((response.status_code, request_id, version))
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))


def _registry(home: TrainedHome) -> Registry:
    settings = Settings(home=home.home)
    return Registry.from_settings(settings)


def _retrain(home: TrainedHome, seed: int) -> None:
    from churn_mlops.data.lake import Lake
    from churn_mlops.data.spec import load_spec
    from churn_mlops.pipeline.training import train_and_register

    settings = Settings(home=home.home)
    settings = settings.model_copy(update={"training": settings.training.model_copy(update={"seed": seed})})
    lake = Lake(settings.lake_dir)
    version = lake.get("latest")
    train_and_register(lake.read(version), version, load_spec(), settings)


def test_hot_reload_under_load_fails_no_request_and_refuses_tampering(tmp_path: Path) -> None:
    home = make_trained_home(tmp_path)
    _retrain(home, seed=5)
    registry = _registry(home)
    with server(home) as (url, _), Hammer(url, home.predict_key, home.customers) as hammer:
        time.sleep(1.5)
        promote(registry, "2", Settings(home=home.home), actor="test", force=True)
        reload = httpx.post(f"{url}/admin/reload", headers={"X-API-Key": home.admin_key}, timeout=60)
        assert reload.json() == {"previous": "1", "version": "2"}
        time.sleep(1.5)
        stored = next(
            p
            for p in (home.home / "mlartifacts").rglob("model/model.txt")
            if registry.resolve("1").run_id in str(p)
        )
        stored.write_text(stored.read_text() + "\n")
        registry.set_alias("champion", "1")
        refused = httpx.post(f"{url}/admin/reload", headers={"X-API-Key": home.admin_key}, timeout=60)
        assert refused.status_code == 409
        assert "checksum mismatch" in refused.json()["detail"]
        time.sleep(1.0)
    statuses = {status for status, _, _ in hammer.results}
    assert statuses == {200}, (
        f"{len(hammer.results)} requests, statuses {statuses}, errors {hammer.errors[:3]}"
    )
    assert not hammer.errors
    versions = [version for _, _, version in hammer.results]
    assert versions[0] == "1"
    assert versions[-1] == "2"
    assert versions.index("2") > 0
    assert "1" not in versions[versions.index("2") + 4 * 4 :]


def test_sigkill_loses_no_acknowledged_prediction(tmp_path: Path) -> None:
    home = make_trained_home(tmp_path)
    with server(home) as (_url, process), Hammer(_url, home.predict_key, home.customers, threads=6) as hammer:
        time.sleep(3.0)
        os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.5)
    acknowledged = {request_id for status, request_id, _ in hammer.results if status == 200}
    assert len(acknowledged) > 20
    engine = sa.create_engine(f"sqlite:///{home.home / 'serving.db'}")
    with engine.connect() as connection:
        logged = {row[0] for row in connection.execute(sa.text("SELECT request_id FROM predictions"))}
    assert acknowledged <= logged, f"{len(acknowledged - logged)} acknowledged predictions lost"


def test_two_workers_share_the_rate_limit_through_redis(tmp_path: Path) -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:
        require_service(f"Redis at {REDIS_URL}", str(exc))
    home = make_trained_home(tmp_path)
    key, _ = KeyStore(f"sqlite:///{home.home / 'serving.db'}").create(
        f"rl-{uuid.uuid4().hex[:8]}", ["predict"]
    )
    env = {
        "CHURN_SERVING__REDIS_URL": REDIS_URL,
        "CHURN_SERVING__RATE_PER_SECOND": "5",
        "CHURN_SERVING__BURST": "10",
    }
    with server(home, workers=2, **env) as (url, _):
        with Hammer(url, key, home.customers) as hammer:
            started = time.monotonic()
            time.sleep(3.0)
        elapsed = time.monotonic() - started + 1.0
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    allowed = sum(1 for status, _, _ in hammer.results if status == 200)
    refused = sum(1 for status, _, _ in hammer.results if status == 429)
    assert refused > 0
    assert allowed <= 10 + 5 * elapsed + 2, (allowed, refused, elapsed)
    counted = {
        status: _sample(metrics, f'churn_http_requests_total{{route="/predict",status="{status}"}}')
        for status in (200, 429)
    }
    assert counted == {200: allowed, 429: refused}, "metrics must add up across both workers"
    assert not hammer.errors


def test_the_main_job_ends_with_a_server_answering_the_seed_request(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "main-job.log"
    env = {**os.environ, "CHURN_HOME": str(tmp_path / "churn-home")}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "churn_mlops", "pipeline", "run", "--serve", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/health/ready", process, log, timeout=300)
        printed = log.read_text()
        key = printed.split("API key (scopes predict, admin, view; shown once): ")[1].split()[0]
        body = printed.split("-d '")[1].split("'")[0]
        assert f"http://127.0.0.1:{port}/predict" in printed
        response = httpx.post(
            f"http://127.0.0.1:{port}/predict",
            content=body,
            headers={"Content-Type": "application/json", "X-API-Key": key},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert set(answer) >= {"churn_probability", "prediction", "risk", "model_version", "request_id"}
        assert answer["model_version"] == "1"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _sample(exposition: str, name: str) -> int:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[-1]))
    return 0


def test_each_request_writes_one_json_access_line(tmp_path: Path) -> None:
    home = make_trained_home(tmp_path)
    with server(home) as (url, _):
        key = {"X-API-Key": home.predict_key}
        sent = {
            "ok-1": httpx.post(
                f"{url}/predict", json=home.customers[0], headers={**key, "X-Request-ID": "ok-1"}
            ),
            "bad-1": httpx.post(
                f"{url}/predict", json={"tenure": "x"}, headers={**key, "X-Request-ID": "bad-1"}
            ),
            "anon-1": httpx.post(
                f"{url}/predict", json=home.customers[0], headers={"X-Request-ID": "anon-1"}
            ),
        }
        time.sleep(0.5)  # the access log is written every 50 ms
        port = url.rsplit(":", 1)[1]
        lines = [
            json.loads(line)
            for line in (home.home / f"server-{port}.log").read_text().splitlines()
            if line.startswith("{")
        ]
    access = {line["request_id"]: line for line in lines if line["logger"] == "churn_mlops.serving.access"}
    for request_id, response in sent.items():
        line = access[request_id]
        assert (line["status"], line["path"], line["method"]) == (response.status_code, "/predict", "POST")
        assert (line["level"], line["message"]) == ("info", "request")
        assert line["latency_ms"] > 0
    assert [sent[i].status_code for i in sent] == [200, 422, 401]
    assert (access["ok-1"]["model_version"], access["ok-1"]["key"]) == (
        sent["ok-1"].json()["model_version"],
        "client",
    )
    assert access["anon-1"]["key"] is None
