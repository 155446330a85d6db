"""Liveness, readiness and the Prometheus metrics."""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from churn_mlops.serving.deps import MetricsDep

router = APIRouter()


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Ready only when a verified model is loaded."""
    services = getattr(request.app.state, "services", None)  # absent until the lifespan starts
    version = services.holder.version_or_none() if services is not None else None
    if version is None:
        return JSONResponse({"status": "not ready", "detail": "no verified model loaded"}, status_code=503)
    return JSONResponse({"status": "ready", "model_version": version})


@router.get("/metrics", include_in_schema=False)
async def metrics(exporter: MetricsDep) -> Response:
    """Prometheus metrics."""
    exposition = await asyncio.to_thread(exporter.exposition)  # may read the monitoring store
    return Response(exposition, media_type="text/plain; version=0.0.4")
