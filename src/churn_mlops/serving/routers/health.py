"""Liveness, readiness and the Prometheus metrics."""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from churn_mlops.serving.deps import MetricsDep
from churn_mlops.serving.readiness import Readiness

router = APIRouter()


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Ready only when a verified model is loaded and every dependency of /predict answers."""
    readiness: Readiness | None = getattr(request.app.state, "readiness", None)  # set by the lifespan
    if readiness is None:
        return _not_ready(["the server is starting"])
    version = readiness.services.holder.version_or_none()
    problems = [] if version is not None else ["no verified model loaded"]
    problems += [f"{role} unavailable" for role in await readiness.unavailable()]
    if problems:
        return _not_ready(problems)
    return JSONResponse({"status": "ready", "model_version": version})


def _not_ready(problems: list[str]) -> JSONResponse:
    return JSONResponse({"status": "not ready", "detail": "; ".join(problems)}, status_code=503)


@router.get("/metrics", include_in_schema=False)
async def metrics(exporter: MetricsDep) -> Response:
    """Prometheus metrics."""
    exposition = await asyncio.to_thread(exporter.exposition)  # may read the monitoring store
    return Response(exposition, media_type="text/plain; version=0.0.4")
