"""The routes' shared dependencies: services from the app's state, API-key scopes, the served model."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from pydantic import BaseModel

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.serving.keys import ApiKey, KeyStore
from churn_mlops.serving.metrics import Metrics
from churn_mlops.serving.model import LoadedModel, ModelHolder
from churn_mlops.serving.online import Completer, OnlineStore
from churn_mlops.serving.predlog import PredictionLog
from churn_mlops.serving.ratelimit import RateLimiter
from churn_mlops.serving.rollout import Rollouts
from churn_mlops.settings import Settings


@dataclass
class Services:
    """Everything the routes use that the lifespan builds and tears down."""

    keys: KeyStore
    limiter: RateLimiter
    predlog: PredictionLog
    holder: ModelHolder
    rollouts: Rollouts | None = None  # a shadow model, while a rollout runs
    online: OnlineStore | None = None  # the online feature store, where one is configured


def get_services(request: Request) -> Services:
    """The services the lifespan built."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_metrics(request: Request) -> Metrics:
    """The app's Prometheus metrics."""
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_spec(request: Request) -> DatasetSpec:
    """The dataset spec the app serves."""
    spec: DatasetSpec = request.app.state.spec
    return spec


def get_completer(request: Request) -> Completer:
    """What completes customers sent by id from the online store."""
    completer: Completer = request.app.state.completer
    return completer


def get_request_model(request: Request) -> type[BaseModel]:
    """The spec-derived model of one customer in a request."""
    customer: type[BaseModel] = request.app.state.customer
    return customer


def current_model(services: ServicesDep) -> LoadedModel:
    """The model serving now; 503 when none is loaded."""
    current = services.holder.current
    if current is None:
        raise HTTPException(503, "no verified model is loaded")
    return current


async def authorize(request: Request, scope: str) -> ApiKey:
    """The request's API key, if it is valid, has `scope` and is within its rate limit."""
    raw = request.headers.get("x-api-key") or _bearer(request.headers.get("authorization"))
    if not raw:
        raise HTTPException(401, "an API key is required (header X-API-Key)", {"WWW-Authenticate": "ApiKey"})
    services = get_services(request)
    key = await services.keys.authenticate_async(raw)  # off the event loop, within its timeout
    if key is None:
        raise HTTPException(401, "the API key is not valid", {"WWW-Authenticate": "ApiKey"})
    request.state.key_name = key.name
    if scope not in key.scopes:
        raise HTTPException(403, f"the API key {key.name!r} lacks the {scope!r} scope")
    decision = await services.limiter.acquire(key.name)
    if not decision.allowed:
        get_metrics(request).count_rate_limited(key.name)
        retry = max(1, int(decision.retry_after + 0.999))
        raise HTTPException(429, f"rate limit exceeded, retry in {retry} s", {"Retry-After": str(retry)})
    return key


def require_scope(scope: str) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency: a valid key with `scope`, within its rate limit."""

    async def check(request: Request) -> ApiKey:
        return await authorize(request, scope)

    return check


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RequestModel = Annotated[type[BaseModel], Depends(get_request_model)]
CurrentModel = Annotated[LoadedModel, Depends(current_model)]
PredictKey = Annotated[ApiKey, Depends(require_scope("predict"))]
AdminKey = Annotated[ApiKey, Depends(require_scope("admin"))]
Explain = Annotated[bool, Query(description="Also return the top reasons for the score.")]


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None
