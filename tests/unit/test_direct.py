"""DirectDispatch renders a prediction route's errors with the handler Starlette would pick."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from churn_mlops.errors import ChurnError, ConfigError
from churn_mlops.serving.direct import error_handler


async def _by_class(request: Any, exc: Exception) -> Any: ...
async def _by_status(request: Any, exc: Exception) -> Any: ...
async def _churn(request: Any, exc: Exception) -> Any: ...
async def _anything(request: Any, exc: Exception) -> Any: ...


HANDLERS: dict[Any, Any] = {
    HTTPException: _by_class,
    429: _by_status,
    500: _anything,
    ChurnError: _churn,
    Exception: _anything,
}


def test_a_status_handler_comes_before_the_class_handler() -> None:
    assert error_handler(HANDLERS, HTTPException(429)) is _by_status
    assert error_handler(HANDLERS, HTTPException(401)) is _by_class


def test_subclasses_find_their_nearest_handler() -> None:
    assert error_handler(HANDLERS, ConfigError("bad")) is _churn


def test_500_and_exception_are_left_to_the_server_error_middleware() -> None:
    assert error_handler(HANDLERS, HTTPException(500)) is _by_class
    assert error_handler(HANDLERS, RuntimeError("boom")) is None
    assert error_handler({}, RequestValidationError([])) is None
