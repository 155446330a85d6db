"""The gateway's refusals over real sockets: a body over the limit gets its 413 with any client."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.servers import server
from tests.integration.serving_fixtures import TrainedHome, make_trained_home

pytestmark = pytest.mark.slow
LIMIT = 1_000_000  # serving.max_body_bytes by default


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TrainedHome]]:
    home = make_trained_home(tmp_path_factory.mktemp("gateway"))
    with server(home) as (url, _):
        yield url, home


def _urllib_post(url: str, key: str, body: bytes | Iterator[bytes]) -> urllib.error.HTTPError:
    request = urllib.request.Request(
        f"{url}/predict",
        data=body,
        headers={"Content-Type": "application/json", "X-API-Key": key},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    return refused.value


def _assert_413(error: urllib.error.HTTPError) -> None:
    assert error.code == 413
    assert f"over the limit of {LIMIT} bytes" in json.loads(error.read())["detail"]


@pytest.mark.parametrize("megabytes", [5, 10])
def test_urllib_gets_the_413_every_time(served: tuple[str, TrainedHome], megabytes: int) -> None:
    url, home = served
    body = b"x" * (megabytes * 1_000_000)
    for _ in range(5):
        _assert_413(_urllib_post(url, home.predict_key, body))


def test_a_chunked_body_growing_past_the_limit_gets_the_413(served: tuple[str, TrainedHome]) -> None:
    url, home = served
    chunk = b"x" * 65536
    for _ in range(3):
        chunks = iter([chunk] * 80)  # 5 MiB, sent without a Content-Length
        _assert_413(_urllib_post(url, home.predict_key, chunks))


def test_urllib_gets_a_refusal_sent_before_its_body_was_read(served: tuple[str, TrainedHome]) -> None:
    url, _ = served
    body = b"x" * 900_000  # under the limit: the key is checked first, the body left unread
    for _ in range(5):
        refused = _urllib_post(url, "churn_not-a-real-key", body)
        assert refused.code == 401
        assert "not valid" in json.loads(refused.read())["detail"]


def test_requests_and_httpx_get_the_413(served: tuple[str, TrainedHome]) -> None:
    requests = pytest.importorskip("requests")
    url, home = served
    headers = {"Content-Type": "application/json", "X-API-Key": home.predict_key}
    body = b"x" * 10_000_000
    answer = requests.post(f"{url}/predict", data=body, headers=headers, timeout=60)
    assert answer.status_code == 413
    assert httpx.post(f"{url}/predict", content=body, headers=headers, timeout=60).status_code == 413


def test_a_keep_alive_connection_serves_the_next_request_after_a_413(
    served: tuple[str, TrainedHome],
) -> None:
    url, home = served
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=60)
    headers = {"Content-Type": "application/json", "X-API-Key": home.predict_key}
    try:
        connection.request("POST", "/predict", body=b"x" * 5_000_000, headers=headers)
        refused = connection.getresponse()
        assert refused.status == 413
        refused.read()
        assert refused.getheader("connection") != "close"
        connection.request("POST", "/predict", body=json.dumps(home.customers[0]), headers=headers)
        answered = connection.getresponse()
        assert answered.status == 200, answered.read()
        assert json.loads(answered.read())["model_version"] == "1"
    finally:
        connection.close()


def test_a_body_beyond_the_discard_bound_is_refused_at_once_and_closed(
    served: tuple[str, TrainedHome],
) -> None:
    url, home = served
    head = (
        "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {home.predict_key}\r\nContent-Length: {1 << 30}\r\n\r\n"
    )
    status, headers, body = _raw(url, head)
    assert status.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in headers.lower()
    assert b"over the limit" in body


def test_admin_reload_posted_with_no_body_and_no_length_asks_for_a_key(
    served: tuple[str, TrainedHome],
) -> None:
    url, _ = served
    status, _, body = _raw(url, "POST /admin/reload HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 401"), body
    assert b"API key" in body


def _raw(url: str, head: str) -> tuple[bytes, bytes, bytes]:
    """Status line, headers and body of the answer to a request written by hand."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(head.encode())
        answer = _read_all(sock)
    status, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    return status, headers, body


def _read_all(sock: socket.socket) -> bytes:
    parts = []
    while chunk := sock.recv(65536):
        parts.append(chunk)
    return b"".join(parts)
