"""Routes whose arguments are solved by hand: the prediction endpoints' hot path.

FastAPI solves an endpoint's parameters with general machinery (a dependency graph, one
validation per parameter, a round trip through the response model). Per request that costs more
than scoring a customer with LightGBM. A `DirectRoute` is documented by FastAPI from its endpoint
exactly like any other route, but a route-specific `solve(request)` builds the endpoint's
arguments, in the order a gateway should work: the API key and the rate limit first, then the
body (one pydantic-core pass over the raw JSON), then the query. Its errors are the ones FastAPI
raises (HTTPException, RequestValidationError), so they are rendered the same way, and the
endpoint returns its own Response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

Solver = Callable[[Request], Awaitable[dict[str, Any]]]
_FLAG = TypeAdapter(bool)


class DirectRoute(APIRoute):
    """An APIRoute whose endpoint gets its arguments from `solve` rather than from FastAPI."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, solve: Solver, **kwargs: Any) -> None:
        self.solve = solve  # before APIRoute.__init__, which builds the handler
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Solve the arguments, call the endpoint, return its response."""
        endpoint, solve = self.endpoint, self.solve

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(**await solve(request))
            return response

        return handler


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
