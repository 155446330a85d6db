"""Webhook delivery against a real local HTTP server: retries, backoff, Retry-After, failures by host."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from churn_mlops.monitoring.webhooks import Notification, WebhookSender

SECRET_PATH = "/services/T0000/B0000/s3cr3t-t0k3n"


@dataclass(frozen=True)
class Reply:
    """How the server answers one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class RecordingServer(ThreadingHTTPServer):
    """A webhook receiver that records every request and answers from a script of replies."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.replies: list[Reply] = []
        self.default = Reply(200)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        """The base URL of the server."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, *replies: int | Reply, then: int = 200) -> None:
        """Answer the next requests with these statuses (or replies), and every later one with `then`."""
        self.replies = [reply if isinstance(reply, Reply) else Reply(reply) for reply in replies]
        self.default = Reply(then)

    def record(self, path: str, body: bytes) -> Reply:
        """Store one request and pick its reply."""
        with self.lock:
            self.requests.append((path, json.loads(body)))
            return self.replies.pop(0) if self.replies else self.default

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out has closed its socket before the late answer is written.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class RecordingHandler(BaseHTTPRequestHandler):
    """Reads the JSON body, then answers as the server's script says."""

    server: RecordingServer

    def do_POST(self) -> None:
        """Record the request and send the scripted reply."""
        reply = self.server.record(self.path, self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(reply.delay)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def start_server() -> Iterator[Callable[[], RecordingServer]]:
    """Start recording servers in threads; all are shut down after the test."""
    servers: list[RecordingServer] = []

    def start() -> RecordingServer:
        server = RecordingServer()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server(start_server: Callable[[], RecordingServer]) -> RecordingServer:
    """One recording server."""
    return start_server()


@pytest.fixture
def delays() -> list[float]:
    """The backoff delays a sender asked to sleep, recorded instead of slept."""
    return []


@pytest.fixture
def make_sender(delays: list[float]) -> Iterator[Callable[..., WebhookSender]]:
    """Build senders that record their sleeps; all are closed after the test."""
    senders: list[WebhookSender] = []

    def make(*urls: str, **options: Any) -> WebhookSender:
        sender = WebhookSender(urls, sleep=delays.append, **options)
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        sender.close()


def drift_alert(state: str = "firing") -> Notification:
    """A score-drift notification like the monitoring job sends."""
    return Notification(
        rule="score_drift",
        severity="critical",
        window="2026-11-16",
        state=state,
        message="score PSI 0.31 > 0.2",
        value=0.31,
        extra={"threshold": 0.2, "model_version": "7"},
    )


def closed_port_url() -> str:
    """A URL on a local port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_two_failures_then_success_is_delivered_after_exponential_backoff(
    server: RecordingServer, make_sender: Callable[..., WebhookSender], delays: list[float]
) -> None:
    server.answer(503, 503, 200)

    delivered = make_sender(server.url + SECRET_PATH, backoff=0.5).send(drift_alert())

    assert delivered is True
    assert len(server.requests) == 3
    assert delays == [0.5, 1.0]
    path, body = server.requests[-1]
    assert path == SECRET_PATH
    assert body == {
        "text": "[critical] FIRING score_drift (window 2026-11-16): score PSI 0.31 > 0.2",
        "rule": "score_drift",
        "severity": "critical",
        "window": "2026-11-16",
        "state": "firing",
        "message": "score PSI 0.31 > 0.2",
        "value": 0.31,
        "extra": {"threshold": 0.2, "model_version": "7"},
    }


def test_a_resolved_alert_says_resolved(
    server: RecordingServer, make_sender: Callable[..., WebhookSender]
) -> None:
    assert make_sender(server.url).send(drift_alert("resolved")) is True

    _, body = server.requests[0]
    assert body["text"] == "[critical] RESOLVED score_drift (window 2026-11-16): score PSI 0.31 > 0.2"
    assert body["state"] == "resolved"


def test_a_webhook_that_always_fails_gives_up_and_logs_the_host_only(
    server: RecordingServer,
    make_sender: Callable[..., WebhookSender],
    delays: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.answer(then=503)
    caplog.set_level(logging.WARNING, logger="churn_mlops.monitoring.webhooks")

    delivered = make_sender(server.url + SECRET_PATH, retries=3, backoff=0.5).send(drift_alert())

    assert delivered is False
    assert len(server.requests) == 4
    assert delays == [0.5, 1.0, 2.0]
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    line = record.getMessage()
    assert "127.0.0.1" in line
    assert "503" in line
    assert "s3cr3t" not in line
    assert "/services" not in line
    assert "\n" not in line


def test_a_client_error_is_not_retried(
    server: RecordingServer, make_sender: Callable[..., WebhookSender], delays: list[float]
) -> None:
    server.answer(400)

    assert make_sender(server.url, retries=3).send(drift_alert()) is False
    assert len(server.requests) == 1
    assert delays == []


@pytest.mark.parametrize(
    ("retry_after", "expected_delay"),
    [("3", 3.0), ("0", 0.0), ("100", 5.0), ("Wed, 21 Oct 2026 07:28:00 GMT", 0.5)],
    ids=["honoured", "zero", "capped-at-ten-backoffs", "http-date-ignored"],
)
def test_retry_after_is_honoured_on_429(
    server: RecordingServer,
    make_sender: Callable[..., WebhookSender],
    delays: list[float],
    retry_after: str,
    expected_delay: float,
) -> None:
    server.answer(Reply(429, {"Retry-After": retry_after}), 200)

    assert make_sender(server.url, backoff=0.5).send(drift_alert()) is True
    assert len(server.requests) == 2
    assert delays == [expected_delay]


def test_connection_refused_returns_false_without_raising(
    make_sender: Callable[..., WebhookSender], delays: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="churn_mlops.monitoring.webhooks")

    assert make_sender(closed_port_url(), retries=2, backoff=0.5).send(drift_alert()) is False
    assert delays == [0.5, 1.0]
    assert "ConnectError" in caplog.records[0].getMessage()


def test_one_failing_url_fails_the_send_but_the_other_still_receives_it(
    start_server: Callable[[], RecordingServer], make_sender: Callable[..., WebhookSender]
) -> None:
    failing, healthy = start_server(), start_server()
    failing.answer(then=500)

    assert make_sender(failing.url, healthy.url, retries=1).send(drift_alert()) is False
    assert len(failing.requests) == 2
    assert len(healthy.requests) == 1
    assert healthy.requests[0][1]["rule"] == "score_drift"


def test_a_timeout_is_a_failure_and_is_retried(
    server: RecordingServer, make_sender: Callable[..., WebhookSender], delays: list[float]
) -> None:
    server.answer(Reply(200, delay=1.0), 200)

    assert make_sender(server.url, timeout=0.2, backoff=0.5).send(drift_alert()) is True
    assert len(server.requests) == 2
    assert delays == [0.5]


def test_sending_again_delivers_the_same_document(
    server: RecordingServer, make_sender: Callable[..., WebhookSender]
) -> None:
    server.answer(500, then=200)

    assert make_sender(server.url, retries=0).send(drift_alert()) is False
    assert make_sender(server.url, retries=0).send(drift_alert()) is True  # the next run's sender
    assert server.requests[0] == server.requests[1]


def test_a_sender_does_not_try_a_failed_url_again(
    server: RecordingServer, make_sender: Callable[..., WebhookSender]
) -> None:
    server.answer(500, then=200)
    sender = make_sender(server.url, retries=0)

    assert sender.send(drift_alert()) is False
    assert sender.send(drift_alert("resolved")) is False  # one round of retries per run, not per alert
    assert len(server.requests) == 1


def test_no_urls_sends_nothing_and_succeeds(make_sender: Callable[..., WebhookSender]) -> None:
    assert make_sender().send(drift_alert()) is True


def test_a_nan_value_and_unusual_extras_are_still_sent(
    server: RecordingServer, make_sender: Callable[..., WebhookSender]
) -> None:
    alert = Notification("r", "warning", "w", "firing", "m", float("nan"), {"psi": Decimal("0.31"), 1: "x"})

    assert make_sender(server.url).send(alert) is True
    _, body = server.requests[0]
    assert body["value"] is None
    assert body["extra"] == {"psi": "0.31", "1": "x"}
