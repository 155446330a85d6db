"""The closed loop end to end, as a user runs it: the main job, drifted traffic, `churn loop run`,
and a running server that moves to the new champion without failing a request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from tests.e2e.servers import server
from tests.integration.serving_fixtures import TrainedHome, ingest_rows

pytestmark = pytest.mark.slow


def _churn(home: Path, *args: str, expect: int = 0) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "churn_mlops", *args],
        env={**os.environ, "CHURN_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == expect, done.stderr[-3000:]
    return done.stdout


class Client(threading.Thread):
    """Sends /predict one request after another and keeps every answer's status and version."""

    def __init__(self, url: str, key: str, customer: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.customer = url, key, customer
        self.answers: list[tuple[int, str | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=10) as client:
            while not self.stopping.is_set():
                try:
                    response = client.post("/predict", json=self.customer)
                    version = response.json().get("model_version") if response.status_code == 200 else None
                    self.answers.append((response.status_code, version))
                except httpx.HTTPError as exc:
                    self.answers.append((0, type(exc).__name__))
                time.sleep(0.02)


def test_drift_retrains_gates_promotes_and_the_running_server_follows(tmp_path: Path) -> None:
    home = tmp_path / "churn-home"
    _churn(home, "pipeline", "run", "--json")
    key = json.loads(_churn(home, "keys", "create", "--name", "crm", "--scope", "predict", "--json"))["key"]
    customers = tmp_path / "customers.csv"
    _churn(home, "data", "generate", "--rows", "5", "--output", str(customers))
    customer = ingest_rows(pl.read_csv(customers, infer_schema=False))[0]

    trained = TrainedHome(home, key, key, [customer])
    with server(trained, CHURN_SERVING__RELOAD_POLL_SECONDS="1") as (url, _process):
        client = Client(url, key, customer)
        client.start()
        try:
            _churn(
                home,
                "simulate",
                "--days",
                "20",
                "--per-day",
                "2000",
                "--drift-from-day",
                "10",
                "--drift",
                "0.8",
            )
            decision = json.loads(_churn(home, "loop", "run", "--json"))
            assert decision["retrain"] is True
            assert "drift_share" in decision["fired"]
            assert decision["outcome"] == "promoted", decision["reason"]
            assert decision["version"] == "2"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(v == "2" for _, v in client.answers[-5:]):
                time.sleep(0.2)
        finally:
            client.stopping.set()
            client.join(timeout=15)

    statuses = Counter(status for status, _ in client.answers)
    versions = [version for _, version in client.answers]
    assert statuses == {200: len(client.answers)}, statuses  # not one failed request
    assert versions[0] == "1"
    assert versions[-1] == "2"  # the server moved to the new champion by itself
    switch = versions.index("2")
    assert set(versions[switch:]) == {"2"}  # and stayed there

    audit = [json.loads(line) for line in (home / "registry" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["action"] == "loop: promoted"
    assert set(audit[-1]["rules"]) >= {"drift_share"}
    again = json.loads(_churn(home, "loop", "run", "--json", "--detailed-exit-codes"))
    assert again["version"] in (None, "2")  # nothing new: not trained twice
    assert again["outcome"] == "kept"
