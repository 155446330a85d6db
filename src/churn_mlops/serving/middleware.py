"""Pure ASGI middleware: request ids, body limits, content types, access logs and metrics.

Written against ASGI directly rather than BaseHTTPMiddleware: it sits on every request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from typing import Any

import orjson
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churn_mlops.serving.logs import FastInfo
from churn_mlops.serving.metrics import Metrics
from churn_mlops.serving.traffic import TrafficRecorder

access = FastInfo(logging.getLogger("churn_mlops.serving.access"))
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
JSON_TYPES = (b"application/json", b"application/problem+json")
DISCARD_BYTES = 64 * 2**20  # of a body left unread, read and dropped before the answer at most
DISCARD_SECONDS = 10.0  # spent on that at most


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
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        in_flight: InFlight | None = None,
        discard_seconds: float = DISCARD_SECONDS,
        traffic: TrafficRecorder | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.traffic = traffic
        self.max_body_bytes = max_body_bytes
        self.in_flight = in_flight or InFlight()
        self.discard_seconds = discard_seconds
        self._body_routes: list[Any] | None = None  # read from the app on the first request

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
        problem = self._refusal(scope, headers)
        body = _request_body(receive, headers, self.max_body_bytes, self.discard_seconds)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                if body is not None and not body.done and not await body.discard():
                    extra.append((b"connection", b"close"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        self.in_flight.count += 1
        self.in_flight.started += 1
        try:
            if problem is not None:
                await _reply(send_with_id, *problem)
            else:
                await self.app(scope, receive if body is None else body, send_with_id)
        finally:
            self.in_flight.count -= 1
            self._observe(scope, request_id, status["code"], time.perf_counter() - started)

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        """413 for a declared body over the limit; 415 for a non-JSON body to a route that reads one."""
        if scope["method"] not in {"POST", "PUT", "PATCH"}:
            return None
        limit = self.max_body_bytes
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return 413, f"request body over the limit of {limit} bytes"
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if length != b"0" and content_type not in JSON_TYPES and self._takes_body(scope):
            return 415, "send the body as JSON with Content-Type: application/json"
        return None

    def _takes_body(self, scope: Scope) -> bool:
        """Whether the request is for a route that reads a body.

        The others (/admin/reload, an unknown path) go on to authentication and the router.
        """
        if self._body_routes is None:
            app = scope.get("app")
            if app is None:
                return True
            routes = app.router.routes
            self._body_routes = [route for route in routes if getattr(route, "body_field", None) is not None]
        return any(route.matches(scope)[0] is Match.FULL for route in self._body_routes)

    def _observe(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        self.metrics.count_request(path, status, seconds)
        if self.traffic is not None:
            self.traffic.count(path, status, seconds)
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


def _request_body(
    receive: Receive, headers: dict[bytes, bytes], limit: int, seconds: float
) -> RequestBody | None:
    """The request's body as the app reads it; None for a request without one."""
    length = headers.get(b"content-length")
    expect = headers.get(b"expect")
    continues = expect is not None and expect.lower() == b"100-continue"
    if length is None:
        if b"transfer-encoding" not in headers:
            return None
        return RequestBody(receive, seconds, limit, 0, continues)  # refused as it grows past the limit
    if length == b"0":
        return None
    declared = int(length) if length.isdigit() else DISCARD_BYTES + 1
    return RequestBody(receive, seconds, None, declared, continues)


class RequestBody:
    """A receive that counts the body, refuses a streamed one that grows past `limit`, and
    discards what the app left unread before the answer goes out.

    An answer followed by a close while body bytes still arrive makes the kernel reset the
    connection, and a client that sends its whole body before reading (urllib) then sees the
    reset, not the answer. So the rest is read and dropped first, up to DISCARD_BYTES and a time
    bound that a slow sender cannot stretch; past either, the answer goes out with
    `Connection: close`.
    """

    __slots__ = ("continues", "declared", "done", "limit", "read", "receive", "seconds", "seen")

    def __init__(
        self, receive: Receive, seconds: float, limit: int | None, declared: int, continues: bool
    ) -> None:
        self.receive, self.seconds, self.limit = receive, seconds, limit
        self.declared, self.continues = declared, continues
        self.seen = 0
        self.read = self.done = False

    async def __call__(self) -> Message:
        """The next message, counted; BodyTooLargeError once a streamed body passes the limit."""
        self.read = True
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
            if self.limit is not None and self.seen > self.limit:
                raise BodyTooLargeError(self.limit)
        else:
            self.done = True  # the client is gone
        return message

    async def discard(self) -> bool:
        """Read and drop the rest of the body within the bounds; whether all of it came."""
        if self.done:
            return True
        if self.declared > DISCARD_BYTES or (self.continues and not self.read):
            return False  # too much to wait for, or a client that sends only once asked to
        try:
            async with asyncio.timeout(self.seconds):
                while not self.done and self.seen <= DISCARD_BYTES:
                    message = await self.receive()
                    self.seen += len(message.get("body", b""))
                    self.done = message["type"] != "http.request" or not message.get("more_body", False)
        except TimeoutError:
            return False
        return self.done


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
