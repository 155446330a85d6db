"""The ASGI entry point for uvicorn workers: `uvicorn churn_mlops.serving.asgi:create --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from churn_mlops.serving.app import create_app
from churn_mlops.serving.logs import configure_json_logging


def create() -> FastAPI:
    """The app with JSON logs, built from the environment's settings (one per worker process)."""
    configure_json_logging()
    return create_app()
