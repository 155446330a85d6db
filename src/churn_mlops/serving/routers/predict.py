"""POST /predict and /predict/batch: DirectRoutes, documented by FastAPI and solved by hand."""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' signatures, whose
# request model is built at run time from the dataset spec.
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, TypeAdapter

from churn_mlops.serving import answers
from churn_mlops.serving.deps import (
    Explain,
    PredictKey,
    authorize,
    current_model,
    get_completer,
    get_metrics,
    get_services,
    get_spec,
)
from churn_mlops.serving.direct import DirectRoute, Solver, parse_body, query_flag
from churn_mlops.serving.keys import ApiKey
from churn_mlops.serving.schemas import BatchPublic, PredictionPublic, batch_of


def routes(customer: type[BaseModel], max_batch: int) -> list[DirectRoute]:
    """The prediction routes for the spec's request model, for the router and `DirectDispatch`."""
    batch = batch_of(customer, max_batch)

    async def predict(
        body: customer,  # type: ignore[valid-type]
        request: Request,
        key: PredictKey,
        explain: Explain = False,
    ) -> Response:
        """Score one customer."""
        return _json((await _score(request, key, [body], explain, batch=False))[0])

    async def predict_batch(
        body: batch,  # type: ignore[valid-type]
        request: Request,
        key: PredictKey,
        explain: Explain = False,
    ) -> Response:
        """Score 1 to `serving.max_batch` customers in one call."""
        found = await _score(request, key, body, explain, batch=True)
        return _json(answers.batch(found, request.state.request_id))

    batch_body: TypeAdapter[Any] = TypeAdapter(batch)
    return [
        DirectRoute(
            "/predict",
            predict,
            solve=_solver(TypeAdapter(customer)),
            methods=["POST"],
            response_model=PredictionPublic,
            response_model_exclude_none=True,
        ),
        DirectRoute(
            "/predict/batch",
            predict_batch,
            solve=_solver(batch_body),
            methods=["POST"],
            response_model=BatchPublic,
            response_model_exclude_none=True,
        ),
    ]


def _solver(body: TypeAdapter[Any]) -> Solver:
    """The arguments of a prediction route: key and rate limit, then body, then query."""

    async def solve(request: Request) -> dict[str, Any]:
        key = await authorize(request, "predict")
        customers = parse_body(body, await request.body())
        explain = query_flag(request, "explain")
        return {"body": customers, "request": request, "key": key, "explain": explain}

    return solve


async def _score(
    request: Request, key: ApiKey, customers: list[Any], explain: bool, *, batch: bool
) -> list[dict[str, Any]]:
    """Complete (by id), score, log (committed before the answer) and count a list of customers."""
    started = time.perf_counter()
    services = get_services(request)
    model = current_model(services)
    request.state.model_version = model.version
    completed = await get_completer(request).complete(customers, services.online, batch=batch)
    records = completed.records
    id_field = get_spec(request).id.name
    rollouts = services.rollouts
    canary = rollouts.canary if rollouts is not None else None
    found = answers.predictions(
        model, records, request.state.request_id, id_field=id_field, explain=explain, canary=canary
    )
    for row, features in completed.features.items():
        found[row]["features"] = features
    latency = (time.perf_counter() - started) * 1000
    await services.predlog.write(answers.log_records(found, records, key.name, latency, datetime.now(UTC)))
    shadow = rollouts.shadow if rollouts is not None else None
    if shadow is not None:  # after the champion's answer is logged; the shadow never delays it
        shadow.offer(request.state.request_id, records, found)
    metrics = get_metrics(request)
    for answer in found:
        metrics.count_prediction(answer["model_version"], answer["churn_probability"], answer["prediction"])
    return found


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")
