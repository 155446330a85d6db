"""The model server's endpoints, one module per resource."""

from churn_mlops.serving.routers import admin, health, model, predict

__all__ = ["admin", "health", "model", "predict"]
