"""Error responses: validation failures as 422s that name the field, and the other refusals."""

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from churn_mlops.errors import ChurnError
from churn_mlops.serving.middleware import BodyTooLargeError

logger = logging.getLogger(__name__)
SHOWN_IN_DETAIL = 5  # problems named in `detail`; `errors` lists them all


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_problem(e) for e in exc.errors()]
        message = "; ".join(f"{e['field']}: {e['problem']}" for e in errors[:SHOWN_IN_DETAIL])
        if len(errors) > SHOWN_IN_DETAIL:
            message += f"; and {len(errors) - SHOWN_IN_DETAIL} more (see errors)"
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
    if error.get("type") == "missing":  # pydantic's input is then the object around the field
        return {"field": field, "problem": problem}
    return {"field": field, "problem": problem, "input": _short(error.get("input"))}


def _short(value: Any) -> Any:
    """The offending input: a small scalar as it came, anything else as JSON text cut to 100
    characters (NaN and infinities, which JSON lacks, as text too)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str | int | float | bool | None) and len(repr(value)) <= 100:
        return value
    return json.dumps(value, default=repr)[:100]
