"""Routes whose arguments are solved by hand: the prediction endpoints' hot path.

FastAPI solves an endpoint's parameters with general machinery (a dependency graph, one
validation per parameter, a round trip through the response model). Per request that costs more
than scoring a customer with LightGBM. A `DirectRoute` is documented by FastAPI from its endpoint
exactly like any other route, but a route-specific `solve(request)` builds the endpoint's
arguments, in the order a gateway should work: the API key and the rate limit first, then the
body (one pydantic-core pass over the raw JSON), then the query. Its errors are the ones FastAPI
raises (HTTPException, RequestValidationError), so they are rendered the same way, and the
endpoint returns its own Response.

`DirectDispatch` then hands a request for a DirectRoute straight to it, past the router's search,
FastAPI's exit stacks and Starlette's exception middleware, layers that cost more per request than
anything they do for these routes; the route renders its errors with the app's exception
handlers, as that middleware does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Solver = Callable[[Request], Awaitable[dict[str, Any]]]
ErrorHandler = Callable[[Request, Any], Awaitable[Response]]
_FLAG = TypeAdapter(bool)


class DirectRoute(APIRoute):
    """An APIRoute whose endpoint gets its arguments from `solve` rather than from FastAPI."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, solve: Solver, **kwargs: Any) -> None:
        self.solve = solve  # before APIRoute.__init__, which builds the handler
        super().__init__(path, endpoint, **kwargs)
        self.handle_request = self.get_route_handler()

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Solve the arguments, call the endpoint, return its response."""
        endpoint, solve = self.endpoint, self.solve

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(**await solve(request))
            return response

        return handler

    async def answer(self, scope: Scope, receive: Receive, send: Send, errors: Mapping[Any, Any]) -> None:
        """Answer a request for this route; an exception with a handler in `errors` (the app's
        exception handlers) gets that handler's response, as in Starlette's exception middleware."""
        scope["route"], scope["endpoint"], scope["path_params"] = self, self.endpoint, {}  # as routing does
        request = Request(scope, receive, send)
        try:
            response = await self.handle_request(request)
        except Exception as exc:
            handler = error_handler(errors, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def error_handler(handlers: Mapping[Any, Any], exc: Exception) -> ErrorHandler | None:
    """The handler Starlette's exception middleware would pick for `exc`: by status code, then by
    the exception's classes; 500 and Exception are left to the server-error middleware, as there."""
    if isinstance(exc, HTTPException) and exc.status_code != 500 and exc.status_code in handlers:
        found: ErrorHandler = handlers[exc.status_code]
        return found
    classes = (cls for cls in type(exc).__mro__ if cls is not Exception and cls in handlers)
    return next((handlers[cls] for cls in classes), None)


class DirectDispatch:
    """Middleware that hands each request for a DirectRoute to that route, past the router.

    Add it before any other middleware, so it runs inside them all (CORS, the gateway's):
    the request skips only the router and what lies between it and the middleware.
    """

    def __init__(self, app: ASGIApp, *, routes: Sequence[DirectRoute], errors: Mapping[Any, Any]) -> None:
        self.app = app
        self.routes = {(method, route.path): route for route in routes for method in route.methods or ()}
        self.errors = errors  # the app's dict: handlers added later count too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a DirectRoute's request; pass anything else on."""
        route = None
        if scope["type"] == "http":
            path = scope["path"].removeprefix(scope.get("root_path", ""))
            route = self.routes.get((scope["method"], path))
        if route is None:
            await self.app(scope, receive, send)
        else:
            await route.answer(scope, receive, send, self.errors)


def parse_body(adapter: TypeAdapter[Any], body: bytes) -> Any:
    """The body validated straight from JSON; errors located under `body` as FastAPI does."""
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=body) from None


def query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter (true/false, 1/0, yes/no, on/off), false when absent."""
    if not request.scope["query_string"]:  # the usual case: no query to parse
        return False
    value = request.query_params.get(name)
    if value is None:
        return False
    try:
        return _FLAG.validate_python(value)
    except ValidationError as exc:
        errors = [{**error, "loc": ("query", name)} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
