"""Pure ASGI middleware: request ids, body limits, content types, access logs and metrics.

Written against ASGI directly rather than BaseHTTPMiddleware: it sits on every request.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churn_mlops.serving.logs import FastInfo
from churn_mlops.serving.metrics import Metrics

access = FastInfo(logging.getLogger("churn_mlops.serving.access"))
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
JSON_TYPES = (b"application/json", b"application/problem+json")


class InFlight:
    """How many HTTP requests the server is handling now, and has started in all (the prediction
    log asks)."""

    def __init__(self) -> None:
        self.count = 0
        self.started = 0

    def __call__(self) -> int:
        return self.count

    def arrivals(self) -> int:
        """Requests started so far."""
        return self.started


class GatewayMiddleware:
    """Tags each request with an id, enforces size and content type, logs and measures it."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, in_flight: InFlight | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.in_flight = in_flight or InFlight()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = _request_id(headers.get(b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500}
        problem = _refusal(scope, headers, self.max_body_bytes)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        self.in_flight.count += 1
        self.in_flight.started += 1
        try:
            if problem is not None:
                await _reply(send_with_id, *problem)
            else:
                # With a Content-Length (checked above), the server reads no more than that.
                chunked = b"content-length" not in headers
                limited = _limited(receive, self.max_body_bytes) if chunked else receive
                await self.app(scope, limited, send_with_id)
        finally:
            self.in_flight.count -= 1
            self._observe(scope, request_id, status["code"], time.perf_counter() - started)

    def _observe(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        self.metrics.count_request(path, status, seconds)
        state: dict[str, Any] = scope.get("state", {})
        access(
            "request",
            {
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
                "model_version": state.get("model_version"),
                "key": state.get("key_name"),
            },
        )


def _request_id(given: bytes | None) -> str:
    if given:
        text = given.decode("latin-1")
        if _REQUEST_ID.match(text):
            return text
    return new_request_id()


def new_request_id() -> str:
    """32 hex digits, time-ordered like a UUIDv7: milliseconds since the epoch, then 80 random bits.

    Ids in time order sort as the prediction log's rows do, and an index on them, should a
    reader of the log add one, grows at its right edge. The random bits come
    from `random`, seeded from the OS at start-up and again in each forked worker: an id must be
    unique, not unguessable, and a system call per request would let the log's threads take the
    GIL from the event loop.
    """
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


def _refusal(scope: Scope, headers: dict[bytes, bytes], limit: int) -> tuple[int, str] | None:
    if scope["method"] not in {"POST", "PUT", "PATCH"}:
        return None
    length = headers.get(b"content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return 413, f"request body over the limit of {limit} bytes"
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if length != b"0" and content_type not in JSON_TYPES:
        return 415, "send the body as JSON with Content-Type: application/json"
    return None


def _limited(receive: Receive, limit: int) -> Receive:
    """A receive that refuses a streamed body growing past the limit."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLargeError(limit)
        return message

    return wrapped


class BodyTooLargeError(Exception):
    """A chunked body that grew past the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over the limit of {limit} bytes")


async def _reply(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
