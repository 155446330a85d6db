"""Error responses: validation failures as 422s that name the field, and the other refusals."""

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from churn_mlops.errors import ChurnError
from churn_mlops.serving.middleware import BodyTooLargeError

logger = logging.getLogger(__name__)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_problem(e) for e in exc.errors()]
        message = "; ".join(f"{e['field']}: {e['problem']}" for e in errors[:5])
        return JSONResponse({"detail": message, "errors": errors}, status_code=422)

    @app.exception_handler(BodyTooLargeError)
    async def too_large(request: Request, exc: BodyTooLargeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(ChurnError)
    async def churn_error(request: Request, exc: ChurnError) -> JSONResponse:
        logger.warning("request failed: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=503)


def _problem(error: Any) -> dict[str, Any]:
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    field = ".".join(location) or "body"
    problem = error.get("msg", "invalid")
    if error.get("type") == "extra_forbidden":
        problem = "unknown field"
    elif error.get("type") == "json_invalid":
        field, problem = "body", f"malformed JSON ({error.get('ctx', {}).get('error', 'parse error')})"
    return {"field": field, "problem": problem, "input": _short(error.get("input"))}


def _short(value: Any) -> Any:
    """The offending input, echoed only when small and JSON-safe."""
    text = repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value if len(text) <= 100 and isinstance(value, str | int | float | bool | None) else text[:100]
