"""Error responses: validation failures as 422s that name the field, and the other refusals.

A failing dependency is answered 503 with a message naming the service, never its host or the
driver's words; the full cause goes to the server's log.
"""

import json
import logging
import math
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from churn_mlops.errors import ChurnError
from churn_mlops.serving.deps import get_spec
from churn_mlops.serving.keys import KeyStoreError
from churn_mlops.serving.middleware import BodyTooLargeError
from churn_mlops.serving.online.errors import FeatureStoreError, StaleFeaturesError, UnknownCustomerError
from churn_mlops.serving.predlog import PredictionLogError
from churn_mlops.serving.ratelimit import RateLimitBackendError
from churn_mlops.serving.traffic import ROUTES

logger = logging.getLogger(__name__)
SHOWN_IN_DETAIL = 5  # problems named in `detail`; `errors` lists them all
UNAVAILABLE: dict[type[ChurnError], str] = {
    PredictionLogError: "the prediction log is unavailable; try again",
    RateLimitBackendError: "the rate-limit store is unavailable; try again",
    KeyStoreError: "the API key store is unavailable; try again",
    FeatureStoreError: "the online feature store is unavailable; try again",
}
SOMETHING_UNAVAILABLE = "a service this request needs is unavailable; try again"
NO_ONLINE_STORE = (
    " (this server has no online feature store, so a customer sent by id needs every field too; run"
    " `churn features materialize`, then restart the server, to send customers by id alone)"
)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_problem(e) for e in exc.errors()]
        message = "; ".join(f"{e['field']}: {e['problem']}" for e in errors[:SHOWN_IN_DETAIL])
        if len(errors) > SHOWN_IN_DETAIL:
            message += f"; and {len(errors) - SHOWN_IN_DETAIL} more (see errors)"
        if _by_id_without_a_store(request, exc):
            message += NO_ONLINE_STORE
        return JSONResponse({"detail": message, "errors": errors}, status_code=422)

    @app.exception_handler(BodyTooLargeError)
    async def too_large(request: Request, exc: BodyTooLargeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(UnknownCustomerError)
    async def unknown(request: Request, exc: UnknownCustomerError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "customer_ids": exc.customer_ids}, status_code=404)

    @app.exception_handler(StaleFeaturesError)
    async def stale(request: Request, exc: StaleFeaturesError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "customer_ids": exc.customer_ids}, status_code=409)

    @app.exception_handler(ChurnError)
    async def churn_error(request: Request, exc: ChurnError) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        logger.warning("request %s failed: %s", request_id, exc)
        return JSONResponse({"detail": unavailable(exc)}, status_code=503)


def unavailable(exc: ChurnError) -> str:
    """What a client is told about a failing dependency: which service, not where it runs."""
    found = (UNAVAILABLE[cls] for cls in type(exc).__mro__ if cls in UNAVAILABLE)
    return next(found, SOMETHING_UNAVAILABLE)


def _by_id_without_a_store(request: Request, exc: RequestValidationError) -> bool:
    """Whether a prediction was refused for missing fields that an online store would have filled:
    a customer sent with its id and without most of its features, to a server that started
    without a store. A full customer missing a field or two is answered as ever."""
    route = request.scope.get("route")
    if getattr(request.app.state, "by_id", True) or getattr(route, "path", None) not in ROUTES:
        return False
    missing = Counter(_customer(error) for error in exc.errors() if error.get("type") == "missing")
    if not missing:
        return False
    body = exc.body
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError:
            return False
    spec = get_spec(request)
    customers: dict[int | None, Any] = dict(enumerate(body)) if isinstance(body, list) else {None: body}
    sent = {row: customer for row, customer in customers.items() if isinstance(customer, dict)}
    return any(
        row in sent and sent[row].get(spec.id.name) is not None and count > len(spec.features) / 2
        for row, count in missing.items()
    )


def _customer(error: Any) -> int | None:
    """The batch row a validation error is about (None in a one-customer body)."""
    location = error.get("loc", ())
    return location[1] if len(location) > 1 and isinstance(location[1], int) else None


def _problem(error: Any) -> dict[str, Any]:
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    field = ".".join(location) or "body"
    problem = error.get("msg", "invalid")
    kind, context = error.get("type"), error.get("ctx", {})
    if kind == "extra_forbidden":
        problem = "unknown field"
    elif kind == "too_short" and context.get("field_type") == "List":
        problem = f"a list of at least {_items(context['min_length'])}, not {context['actual_length']}"
    elif kind == "too_long" and context.get("field_type") == "List":
        problem = f"a list of at most {_items(context['max_length'])}, not {context['actual_length']}"
    elif kind == "json_invalid":
        field, problem = "body", f"malformed JSON ({context.get('error', 'parse error')})"
    if kind == "missing":  # pydantic's input is then the object around the field
        return {"field": field, "problem": problem}
    return {"field": field, "problem": problem, "input": _short(error.get("input"))}


def _items(count: int) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def _short(value: Any) -> Any:
    """The offending input: a small scalar as it came, anything else as JSON text cut to 100
    characters (NaN and infinities, which JSON lacks, as text too)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str | int | float | bool | None) and len(repr(value)) <= 100:
        return value
    return json.dumps(value, default=repr)[:100]
