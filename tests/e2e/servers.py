"""`churn serve` as a real process for the end-to-end tests: started on a free port, killed after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.faults import free_port
from tests.integration.serving_fixtures import TrainedHome

UNLIMITED = {"CHURN_SERVING__RATE_PER_SECOND": "100000", "CHURN_SERVING__BURST": "100000"}
# What each worker logs once its services are up (it then loads the model, or says it has none).
STARTED = ('"serving model version', '"no model loaded')


@contextmanager
def server(
    home: TrainedHome, *, workers: int = 1, probe: str = "/health/ready", **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A `churn serve` process whose `probe` answers 200, with limits that never refuse unless set."""
    port = free_port()
    command = [sys.executable, "-m", "churn_mlops", "serve", "--port", str(port), "--workers", str(workers)]
    log = home.home / f"server-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            env=home.environment(**{**UNLIMITED, **env}),
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(url + probe, process, log)
        wait_for_workers(workers, process, log)
        yield url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def wait_for_workers(
    workers: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 120.0
) -> None:
    """Wait until every worker has started its services. The first to start answers the probe
    while another may still be connecting to Redis or the database: a test that stopped one then
    would fail that worker's start, and uvicorn's supervisor would stop the whole server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
        text = log.read_text(errors="replace")
        if sum(text.count(line) for line in STARTED) >= workers:
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:]
    raise AssertionError(f"fewer than {workers} workers started within {timeout:g} s: {tail}")


def wait_until_ok(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    """Wait for `url` to answer 200; fail with the server's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer 200 within {timeout:g} s")
