"""`churn serve`: the model server on the champion."""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer

from churn_mlops.cli.options import PortOption
from churn_mlops.cli.output import err
from churn_mlops.settings import Settings, get_settings


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
    run_server(settings, host, port, workers)


def run_server(settings: Settings, host: str, port: int, workers: int) -> None:
    """Start uvicorn with one or more workers; blocks until stopped."""
    import uvicorn

    if workers > 1:
        _multiprocess_metrics(settings)
    err.print(
        f"serving on http://{host}:{port} (docs at /docs, {workers} worker{'s' * (workers > 1)})",
        highlight=False,
    )
    uvicorn.run(
        "churn_mlops.serving.asgi:create",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )


def _multiprocess_metrics(settings: Settings) -> None:
    """A fresh folder where every worker writes its Prometheus samples."""
    directory = settings.home / "prometheus"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory.resolve())
