"""The endpoints of the model server, closed over its services and the spec-derived request model."""

# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose
# request model is built at run time from the dataset spec.
import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, TypeAdapter

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import ChurnError
from churn_mlops.runtime import freeze_heap
from churn_mlops.serving.direct import DirectRoute, Solver, parse_body, query_flag
from churn_mlops.serving.keys import ApiKey, KeyStore
from churn_mlops.serving.metrics import Metrics
from churn_mlops.serving.model import LoadedModel, ModelHolder
from churn_mlops.serving.predlog import PredictionLog, PredictionRecord
from churn_mlops.serving.ratelimit import RateLimiter
from churn_mlops.serving.schemas import BatchPublic, ModelPublic, PredictionPublic
from churn_mlops.settings import Settings

audit = logging.getLogger("churn_mlops.serving.audit")


@dataclass
class Services:
    """Everything the routes use, built in the lifespan."""

    keys: KeyStore
    limiter: RateLimiter
    predlog: PredictionLog
    holder: ModelHolder


class Routes:
    """The endpoints, closed over the services and the spec-derived request model."""

    def __init__(
        self,
        state: dict[str, Services],
        metrics: Metrics,
        customer: type[BaseModel],
        settings: Settings,
        spec: DatasetSpec,
    ) -> None:
        self.state, self.metrics, self.customer, self.settings, self.spec = (
            state,
            metrics,
            customer,
            settings,
            spec,
        )

    @property
    def services(self) -> Services:
        return self.state["services"]

    def mount(self, app: FastAPI) -> list[DirectRoute]:
        """Add the endpoints to `app`; the prediction routes, for `DirectDispatch`, are returned."""
        customer = self.customer
        predict_key = Annotated[ApiKey, Depends(self.gate("predict"))]
        admin_key = Annotated[ApiKey, Depends(self.gate("admin"))]
        explain = Annotated[bool, Query(description="Also return the top reasons for the score.")]

        # The two prediction routes are DirectRoutes: FastAPI documents them from these
        # signatures, and `self.solver` builds their arguments on the hot path.
        async def predict(
            body: customer,  # type: ignore[valid-type]
            request: Request,
            key: predict_key,
            explain: explain = False,
        ) -> Response:
            """Score one customer."""
            return _json((await self.score(request, key, [body], explain))[0])

        async def predict_batch(
            body: list[customer],  # type: ignore[valid-type]
            request: Request,
            key: predict_key,
            explain: explain = False,
        ) -> Response:
            """Score up to the configured number of customers in one call."""
            limit = self.settings.serving.max_batch
            if not body or len(body) > limit:
                raise HTTPException(422, f"a batch holds 1 to {limit} customers, not {len(body)}")
            predictions = await self.score(request, key, body, explain)
            return _json(
                {
                    "predictions": predictions,
                    "model_version": predictions[0]["model_version"],
                    "request_id": request.state.request_id,
                }
            )

        batch_body: TypeAdapter[Any] = TypeAdapter(list[customer])  # type: ignore[valid-type]
        direct = [
            DirectRoute(
                "/predict",
                predict,
                solve=self.solver(TypeAdapter(customer), "predict"),
                methods=["POST"],
                response_model=PredictionPublic,
                response_model_exclude_none=True,
            ),
            DirectRoute(
                "/predict/batch",
                predict_batch,
                solve=self.solver(batch_body, "predict"),
                methods=["POST"],
                response_model=BatchPublic,
                response_model_exclude_none=True,
            ),
        ]
        app.router.routes[:0] = direct  # first, as the router tries routes in order

        @app.get("/health/live")
        async def live() -> dict[str, str]:
            """The process is up."""
            return {"status": "ok"}

        @app.get("/health/ready")
        async def ready() -> JSONResponse:
            """Ready only when a verified model is loaded."""
            version = self.services.holder.version_or_none() if "services" in self.state else None
            if version is None:
                return JSONResponse(
                    {"status": "not ready", "detail": "no verified model loaded"}, status_code=503
                )
            return JSONResponse({"status": "ready", "model_version": version})

        @app.get("/model", response_model=ModelPublic)
        async def model(key: predict_key) -> Any:
            """The model being served, its metrics, threshold and request schema."""
            return self.describe(self.loaded())

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            """Prometheus metrics."""
            exposition = await asyncio.to_thread(self.metrics.exposition)  # may read the monitoring store
            return Response(exposition, media_type="text/plain; version=0.0.4")

        @app.post("/admin/reload")
        async def reload(request: Request, key: admin_key) -> dict[str, Any]:
            """Load the champion again; on failure the current model keeps serving."""
            holder = self.services.holder
            try:
                old, new = await holder.reload()
            except ChurnError as exc:
                self.audit(key, "reload", request, outcome="refused", detail=str(exc))
                raise HTTPException(
                    409, f"reload refused, still serving {holder.version_or_none()}: {exc}"
                ) from exc
            self.metrics.set_model(new, old)
            freeze_heap()
            self.audit(key, "reload", request, outcome="ok", previous=old, version=new)
            return {"previous": old, "version": new}

        return direct

    def gate(self, scope: str) -> Callable[[Request], Any]:
        """A dependency: a valid key with `scope`, within its rate limit."""

        async def check(request: Request) -> ApiKey:
            return await self.authorize(request, scope)

        return check

    def solver(self, body: TypeAdapter[Any], scope: str) -> Solver:
        """The arguments of a prediction route: key and rate limit, then body, then query."""

        async def solve(request: Request) -> dict[str, Any]:
            key = await self.authorize(request, scope)
            customers = parse_body(body, await request.body())
            explain = query_flag(request, "explain")
            return {"body": customers, "request": request, "key": key, "explain": explain}

        return solve

    async def authorize(self, request: Request, scope: str) -> ApiKey:
        """The request's API key, if it is valid, has `scope` and is within its rate limit."""
        raw = request.headers.get("x-api-key") or _bearer(request.headers.get("authorization"))
        if not raw:
            raise HTTPException(
                401, "an API key is required (header X-API-Key)", {"WWW-Authenticate": "ApiKey"}
            )
        key = self.services.keys.authenticate(raw)
        if key is None:
            raise HTTPException(401, "the API key is not valid", {"WWW-Authenticate": "ApiKey"})
        request.state.key_name = key.name
        if scope not in key.scopes:
            raise HTTPException(403, f"the API key {key.name!r} lacks the {scope!r} scope")
        decision = await self.services.limiter.acquire(key.name)
        if not decision.allowed:
            self.metrics.rate_limited.labels(key=key.name).inc()
            retry = max(1, int(decision.retry_after + 0.999))
            raise HTTPException(429, f"rate limit exceeded, retry in {retry} s", {"Retry-After": str(retry)})
        return key

    def loaded(self) -> LoadedModel:
        current = self.services.holder.current
        if current is None:
            raise HTTPException(503, "no verified model is loaded")
        return current

    async def score(
        self, request: Request, key: ApiKey, customers: list[Any], explain: bool
    ) -> list[dict[str, Any]]:
        """Score, log (committed before we answer) and measure a list of customers."""
        started = time.perf_counter()
        model = self.loaded()
        request.state.model_version = model.version
        rows = [c.model_dump() for c in customers]
        probabilities, decisions = model.score(rows)
        reasons = model.reasons(rows) if explain else None
        request_id = request.state.request_id
        answers = [
            self.answer(model, request_id if len(rows) == 1 else f"{request_id}-{i}", row, p, d)
            for i, (row, p, d) in enumerate(zip(rows, probabilities, decisions, strict=True))
        ]
        if reasons is not None:
            for answer, top in zip(answers, reasons, strict=True):
                answer["reasons"] = top
        latency = (time.perf_counter() - started) * 1000
        now = datetime.now(UTC)
        await self.services.predlog.write(
            [
                PredictionRecord(a["request_id"], now, key.name, model.version, row, p, d, latency)
                for a, row, p, d in zip(answers, rows, probabilities, decisions, strict=True)
            ]
        )
        for p, d in zip(probabilities, decisions, strict=True):
            self.metrics.count_prediction(model.version, p, d)
        return answers

    def answer(
        self, model: LoadedModel, request_id: str, row: dict[str, Any], probability: float, decision: int
    ) -> dict[str, Any]:
        """One customer's answer, as PredictionPublic without its empty fields."""
        answer = {
            "churn_probability": probability,
            "prediction": decision,
            "risk": model.risk(probability),
            "model_version": model.version,
            "request_id": request_id,
        }
        customer_id = row.get(self.spec.id.name)
        if customer_id is not None:
            answer["customer_id"] = customer_id
        return answer

    def describe(self, model: LoadedModel) -> dict[str, Any]:
        info = model.info
        return {
            "name": info.name,
            "version": info.version,
            "aliases": info.aliases,
            "threshold": model.predictor.threshold,
            "metrics": info.metrics,
            "data_version": info.tags.get("data_version"),
            "loaded_at": model.loaded_at,
            "request_schema": self.customer.model_json_schema(),
        }

    def audit(self, key: ApiKey, action: str, request: Request, **fields: Any) -> None:
        audit.info(
            action,
            extra={"action": action, "key": key.name, "request_id": request.state.request_id, **fields},
        )


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None
