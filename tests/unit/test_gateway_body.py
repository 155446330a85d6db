"""The gateway reads and drops an unread request body before answering, within its bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from churn_mlops.serving.metrics import Metrics
from churn_mlops.serving.middleware import DISCARD_BYTES, GatewayMiddleware

Chunks = list[bytes]


async def _refuse_unread(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that answers 401 without reading the body, as authentication does."""
    await send({"type": "http.response.start", "status": 401, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _client(chunks: Chunks, *, hang: bool = False) -> tuple[Callable[[], Awaitable[Message]], list[int]]:
    """A receive that hands out `chunks`, then waits forever if `hang` (a slow sender)."""
    given: list[int] = []

    async def receive() -> Message:
        if not chunks:
            await asyncio.Event().wait()  # `hang`: the rest never comes
        chunk = chunks.pop(0)
        given.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks) or hang}

    return receive, given


def _answer(
    receive: Receive, headers: dict[str, str], seconds: float = 5.0, status: int = 401
) -> dict[bytes, bytes]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/admin/reload",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    gateway = GatewayMiddleware(
        _refuse_unread, metrics=Metrics(), max_body_bytes=1_000_000, discard_seconds=seconds
    )
    asyncio.run(gateway(scope, receive, send))
    assert sent[0]["status"] == status
    return dict(sent[0]["headers"])


def test_an_unread_body_is_read_to_its_end_and_the_connection_kept() -> None:
    receive, given = _client([b"x" * 1000] * 5)
    headers = _answer(receive, {"content-length": "5000", "content-type": "application/json"})
    assert sum(given) == 5000
    assert b"connection" not in headers


def test_a_sender_that_stalls_gets_its_answer_and_a_close_after_the_time_bound() -> None:
    receive, given = _client([b"x" * 1000], hang=True)
    headers = _answer(receive, {"content-length": "5000", "content-type": "application/json"}, 0.2)
    assert sum(given) == 1000
    assert headers[b"connection"] == b"close"


def test_a_body_declared_beyond_the_bound_is_not_waited_for() -> None:
    receive, given = _client([b"x"])
    headers = _answer(receive, {"content-length": str(DISCARD_BYTES + 1)}, status=413)
    assert given == []
    assert headers[b"connection"] == b"close"


def test_a_client_waiting_for_100_continue_is_not_asked_for_its_body() -> None:
    receive, given = _client([b"x" * 1000])
    headers = _answer(
        receive, {"content-length": "1000", "content-type": "application/json", "expect": "100-continue"}
    )
    assert given == []
    assert headers[b"connection"] == b"close"


def test_a_request_without_a_body_is_answered_at_once() -> None:
    receive, given = _client([b""], hang=True)
    headers = _answer(receive, {"content-type": "application/json"})
    assert given == []
    assert b"connection" not in headers
