"""The FastAPI model server: the composition root of the serving layer.

`create_app` builds the routers from the dataset spec and mounts the dashboard; the lifespan
builds the services (key store, rate limiter, prediction log, model holder, online feature
store, traffic counts) and tears them down.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from churn_mlops.dashboard import mount as mount_dashboard
from churn_mlops.data.spec import DatasetSpec, load_spec
from churn_mlops.errors import ChurnError
from churn_mlops.models.catalog import catalog_for
from churn_mlops.monitoring.gauges import MonitoringCollector
from churn_mlops.runtime import freeze_heap, one_scoring_thread
from churn_mlops.serving import routers
from churn_mlops.serving.deps import Services
from churn_mlops.serving.direct import DirectDispatch
from churn_mlops.serving.keys import KeyStore
from churn_mlops.serving.metrics import Metrics
from churn_mlops.serving.middleware import GatewayMiddleware, InFlight
from churn_mlops.serving.model import ModelHolder
from churn_mlops.serving.online import Completer, online_configured, online_store
from churn_mlops.serving.openapi import document
from churn_mlops.serving.predlog import PredictionLog
from churn_mlops.serving.problems import add_error_handlers
from churn_mlops.serving.ratelimit import make_rate_limiter
from churn_mlops.serving.readiness import Readiness
from churn_mlops.serving.rollout import Rollouts
from churn_mlops.serving.schemas import customer_model, request_model
from churn_mlops.serving.traffic import TrafficRecorder
from churn_mlops.settings import Settings, get_settings
from churn_mlops.sql import database_url, timeout_args

logger = logging.getLogger(__name__)


ServicesFactory = Callable[[Settings], Services]


def build_services(settings: Settings) -> Services:
    """The real services: SQL key store and log, Redis or in-process limits, the registry's champion."""
    catalog = catalog_for(settings)
    serving = settings.serving
    url, timeout = settings.serving_database_url, serving.database_timeout_seconds
    predlog = PredictionLog(
        url, batch_size=serving.log_batch_size, wait_ms=serving.log_wait_ms, timeout=timeout
    )
    limiter = make_rate_limiter(
        serving.redis_url, serving.rate_per_second, serving.burst, serving.redis_timeout_seconds
    )
    return Services(
        keys=KeyStore(url, timeout=timeout),
        limiter=limiter,
        predlog=predlog,
        holder=ModelHolder(one_scoring_thread(catalog.load), catalog.resolve),
        rollouts=Rollouts(url, catalog.load, guards=settings.rollout, timeout=timeout),
        online=online_store(settings, load_spec(settings.data.spec)),
    )


async def start_services(settings: Settings, factory: ServicesFactory = build_services) -> Services:
    """The services, built and started: a ChurnError names the dependency that cannot be used."""
    services = factory(settings)
    try:
        services.predlog.start()  # migrates the serving database
        await services.limiter.ping()
        if services.rollouts is not None:
            services.rollouts.start()
        if services.online is not None:
            await services.online.start()
    except BaseException:
        await stop_services(services)
        raise
    return services


async def stop_services(services: Services) -> None:
    """Commit what the log holds and release every connection."""
    try:
        if services.rollouts is not None:
            await services.rollouts.stop()
        services.predlog.close()
    finally:
        await services.limiter.close()
        services.keys.close()
        if services.online is not None:
            await services.online.close()


def create_app(
    settings: Settings | None = None,
    *,
    spec: DatasetSpec | None = None,
    services_factory: ServicesFactory = build_services,
) -> FastAPI:
    """The model server for a dataset spec (the configured one by default)."""
    settings = settings or get_settings()
    spec = spec or load_spec(settings.data.spec)
    metrics = Metrics(key_names=settings.serving.metrics_key_names)
    in_flight = InFlight()
    traffic = TrafficRecorder(
        settings.serving_database_url, timeout=settings.serving.database_timeout_seconds
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await start_services(settings, services_factory)
        services.predlog.window.in_flight = in_flight  # tells a batching window whether it can gather more
        services.predlog.window.arrivals = in_flight.arrivals
        app.state.services = services
        app.state.readiness = Readiness(services, settings.serving)
        await _initial_load(services.holder, metrics)
        poller = _start_polling(services.holder, metrics, settings.serving.reload_poll_seconds)
        monitoring = _monitoring_gauges(settings, metrics)
        traffic.start()
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
            metrics.extra.remove(monitoring)
            monitoring.engine.dispose()
            await traffic.stop()
            dashboard.close()
            await stop_services(services)

    app = FastAPI(
        title="churn-mlops model server",
        version="1",
        lifespan=lifespan,
        description=f"Churn predictions for the {spec.name!r} dataset spec.",
        # Observability here is Prometheus and JSON logs. FastAPI's native OpenTelemetry would
        # look up the global providers on every request to find that none is configured.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.in_flight = in_flight
    app.state.settings, app.state.spec, app.state.metrics = settings, spec, metrics
    unknown_category = settings.serving.unknown_category
    by_id = online_configured(settings)
    app.state.by_id = by_id
    app.state.customer = request_model(spec, unknown_category=unknown_category, by_id=by_id)
    app.state.completer = Completer(
        customer_model(spec, unknown_category=unknown_category),
        spec.id.name,
        ttl_days=settings.feature_store.ttl_days,
        stale=settings.feature_store.stale,
    )
    add_error_handlers(app)
    document(app)
    direct = routers.predict.routes(app.state.customer, settings.serving.max_batch)
    app.router.routes[:0] = direct  # first, as the router tries routes in order
    for router in (routers.health.router, routers.model.router, routers.admin.router):
        app.include_router(router)
    dashboard = mount_dashboard(app, settings)
    # Innermost first: the prediction routes are answered inside CORS and the gateway's middleware.
    app.add_middleware(DirectDispatch, routes=direct, errors=app.exception_handlers)
    if settings.serving.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.serving.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    app.add_middleware(
        GatewayMiddleware,
        metrics=metrics,
        max_body_bytes=settings.serving.max_body_bytes,
        in_flight=in_flight,
        traffic=traffic,
    )
    return app


async def _initial_load(holder: ModelHolder, metrics: Metrics) -> None:
    try:
        loaded = await asyncio.to_thread(holder.load)
        metrics.set_model(loaded.version, None)
    except ChurnError as exc:
        logger.error("no model loaded, not ready: %s", exc)
    freeze_heap()


def _monitoring_gauges(settings: Settings, metrics: Metrics) -> MonitoringCollector:
    """Export the monitoring store's latest results on /metrics."""
    url = database_url(settings.serving_database_url)
    timeouts = timeout_args(url, settings.serving.database_timeout_seconds)
    collector = MonitoringCollector(sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=timeouts))
    metrics.extra.append(collector)
    return collector


def _start_polling(holder: ModelHolder, metrics: Metrics, seconds: float) -> asyncio.Task[None] | None:
    if seconds <= 0:
        return None
    return asyncio.create_task(holder.poll(seconds))
