"""The OpenAPI document as the contract: every answer the server gives, its API-key schemes.

FastAPI documents the successful answers and the request bodies from the routes; this module adds
what happens around them: the refusals (the gateway's 413 and 415, authentication, scopes, rate
limits, validation, unavailable dependencies, and with an online feature store unknown customers
and stale features) with the bodies the server really sends, and the two ways to present a key.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from churn_mlops.serving.schemas import CustomersProblemPublic, ProblemPublic, ValidationProblemPublic

SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerKey": {"type": "http", "scheme": "bearer", "description": "The API key as a bearer token."},
}
KEYED: list[dict[str, list[str]]] = [{"ApiKeyHeader": []}, {"BearerKey": []}]
GATEWAY = (413, 415)  # what the gateway refuses before any route sees a POST
KEY = (401, 403, 429)
REFUSALS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/predict"): (*GATEWAY, *KEY, 422, 503),
    ("post", "/predict/batch"): (*GATEWAY, *KEY, 422, 503),
    ("get", "/model"): (*KEY, 503),
    ("post", "/admin/reload"): (*GATEWAY, *KEY, 409, 503),
}
BY_ID = (404, 409)  # what a prediction by customer id adds, where an online store is configured
PREDICTIONS = (("post", "/predict"), ("post", "/predict/batch"))
WHY = {
    401: "No API key, or one that is not valid.",
    403: "The API key lacks the scope this route needs (`predict`, or `admin` for /admin).",
    409: "The champion could not be loaded or failed verification; the current model keeps serving.",
    413: "The body is over `serving.max_body_bytes`.",
    415: "The body is not sent as JSON (`Content-Type: application/json`).",
    422: "The body or query is not valid: every problem under `errors`, the first five in `detail`.",
    429: "The key's rate limit is spent; retry after `Retry-After` seconds.",
    503: "No verified model is loaded, or a store this request needs (prediction log, API key store, "
    "rate-limit store, online feature store) is unavailable; try again.",
}
WHY_BY_ID = {
    404: "A customer sent by id (without every field) whose features the online store does not hold: "
    "every such id under `customer_ids`.",
    409: "A customer sent by id whose stored features are older than `feature_store.ttl_days` (with "
    "`feature_store.stale` = error): each one under `customer_ids`, their ages in `detail`.",
}
HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string", "const": "ApiKey"}}},
    429: {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}},
}
READINESS = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "detail": {"type": "string"}},
    "required": ["status"],
}


def document(app: FastAPI) -> None:
    """Make `app` serve the full contract at /openapi.json (and in /docs)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def contract(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document for `app` with the refusals, problem bodies and key schemes added."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    models = components.setdefault("schemas", {})
    for model in (ProblemPublic, ValidationProblemPublic):
        models.update(_component(model))
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, which this server never sends
        models.pop(name, None)
    components["securitySchemes"] = SCHEMES
    by_id = getattr(app.state, "by_id", False)
    if by_id:
        models.update(_component(CustomersProblemPublic))
    for (method, path), codes in REFUSALS.items():
        operation = schema["paths"][path][method]
        operation["security"] = KEYED
        answers = operation["responses"] | {str(code): _answer(code) for code in codes}
        if by_id and (method, path) in PREDICTIONS:
            answers |= {str(code): _answer(code, by_id=True) for code in BY_ID}
        operation["responses"] = dict(sorted(answers.items()))
    _readiness(schema["paths"]["/health/ready"]["get"]["responses"])
    return schema


def _answer(code: int, *, by_id: bool = False) -> dict[str, Any]:
    model = ValidationProblemPublic if code == 422 else CustomersProblemPublic if by_id else ProblemPublic
    answer: dict[str, Any] = {
        "description": WHY_BY_ID[code] if by_id else WHY[code],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
    }
    if code in HEADERS:
        answer["headers"] = HEADERS[code]
    return answer


def _readiness(responses: dict[str, Any]) -> None:
    content = {"application/json": {"schema": READINESS}}
    responses["200"] = {
        "description": "Ready: the server takes predictions.",
        "content": content,
    }
    responses["503"] = {"description": "Not ready: `detail` says why.", "content": content}


def _component(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema and those it refers to, as OpenAPI components."""
    found = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**found.pop("$defs", {}), model.__name__: found}
