"""`churn serve`: the model server on the champion."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from typing import Annotated

import typer

from churn_mlops.cli.options import PortOption
from churn_mlops.cli.output import err
from churn_mlops.errors import ChurnError
from churn_mlops.settings import Settings, get_settings

APP = "churn_mlops.serving.asgi:create"


def serve_command(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default from settings: 127.0.0.1).")
    ] = None,
    port: PortOption = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default 1).")] = None,
) -> None:
    """Serve /predict on the champion model, with auth, rate limits and the prediction log."""
    settings = get_settings()
    host = host or settings.serving.host
    port = port or settings.serving.port
    workers = workers or settings.serving.workers
    preflight(settings)
    run_server(settings, host, port, workers)


def preflight(settings: Settings) -> None:
    """Build the app and open its services once, as each worker will, then close them.

    A ChurnError names what cannot be used (a database, the rate-limit store, the dataset spec).
    A missing champion is only a warning: the server starts not ready and waits for one.
    """
    from churn_mlops.serving.app import create_app, start_services, stop_services

    create_app(settings)  # the dataset spec and the request models

    async def check() -> None:
        services = await start_services(settings)
        try:
            await asyncio.to_thread(services.holder.resolver, services.holder.alias)
        except ChurnError as exc:
            warning = f"[bold yellow]warning:[/] not ready until a champion loads: {exc}"
            err.print(warning, highlight=False, soft_wrap=True)
        finally:
            await stop_services(services)

    asyncio.run(check())


def run_server(settings: Settings, host: str, port: int, workers: int) -> None:
    """Start uvicorn with one or more workers; blocks until stopped.

    A worker that fails to start ends it with a ChurnError, so that a service manager never
    takes a server that did not come up for success.
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    if workers > 1:
        _multiprocess_metrics(settings)
    err.print(
        f"serving on http://{host}:{port} (docs at /docs, {workers} worker{'s' * (workers > 1)})",
        highlight=False,
    )
    config = uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )
    if workers == 1:
        server = uvicorn.Server(config)
        with contextlib.suppress(SystemExit):  # uvicorn's way out of a failed start
            server.run()
        if not server.started:
            raise ChurnError("the server did not start (its error is above)")
        return
    # uvicorn.run's supervisor returns normally when a worker fails to start; its exit code tells.
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise ChurnError("a worker did not start (its error is above)")


def _multiprocess_metrics(settings: Settings) -> None:
    """A fresh folder where every worker writes its Prometheus samples."""
    directory = settings.home / "prometheus"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory.resolve())
