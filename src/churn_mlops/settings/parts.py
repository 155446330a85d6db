"""Settings of the system's parts: data, training, registry, serving, batch scoring, feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class DataSettings(BaseModel):
    """The data layer: which dataset spec describes the customer table."""

    spec: Path | None = Field(None, description="dataset spec YAML; the built-in Telco spec if unset")


class TrainingSettings(BaseModel):
    """How models are trained and evaluated."""

    seed: int = 0
    valid_fraction: float = Field(0.2, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    min_rows: int = Field(200, ge=20)
    max_rounds: int = Field(2000, ge=10)
    early_stopping: int = Field(100, ge=5)
    num_threads: int = Field(2, ge=1)
    threshold_rule: Literal["f1", "value"] = "f1"
    candidates: list[Literal["lightgbm", "logistic_regression"]] = Field(
        ["lightgbm", "logistic_regression"], min_length=1, description="models fitted; the best is registered"
    )
    select_by: Literal["roc_auc", "pr_auc", "expected_value"] = Field(
        "roc_auc", description="the validation figure that chooses among the candidates"
    )
    cv_folds: int = Field(
        5, ge=0, le=20, description="folds of the cross-validated ROC AUC in the card; 0 skips it"
    )
    offer_cost: float = Field(10.0, ge=0, description="cost of one retention offer")
    saved_value: float = Field(200.0, ge=0, description="value of a customer kept")
    success_rate: float = Field(0.3, ge=0, le=1, description="share of contacted churners kept")
    slices: dict[str, list[float] | None] = {"contract": None, "tenure": [12.0, 24.0, 48.0]}


class RegistrySettings(BaseModel):
    """Where runs and model versions are tracked, and what the gate asks of a challenger."""

    tracking_uri: str | None = Field(None, description="MLflow tracking URI; SQLite under home if unset")
    model_name: str = "churn"
    experiment: str = "churn"
    floors: dict[str, float] = {"roc_auc": 0.75}
    min_improvement: float = Field(0.0, description="ROC AUC gain over the champion needed to promote")
    max_regression: float = Field(0.01, ge=0, description="how far the bootstrap CI may reach below zero")
    bootstrap_resamples: int = Field(200, ge=10)


class ServingSettings(BaseModel):
    """The model server and its gateway functions."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    database_url: str | None = Field(
        None, description="prediction log and API keys; SQLite under home if unset"
    )
    redis_url: str | None = Field(None, description="shared rate limits across workers and replicas")
    rate_per_second: float = Field(50.0, gt=0, description="sustained requests per second per API key")
    burst: int = Field(100, ge=1, description="requests a key may make at once")
    max_batch: int = Field(1000, ge=1, description="customers in one /predict/batch call")
    max_body_bytes: int = Field(1_000_000, ge=1024)
    unknown_category: Literal["error", "map"] = "error"
    cors_origins: list[str] = []
    metrics_key_names: bool = Field(
        False, description="label /metrics with API key names rather than a hash of each name"
    )
    reload_poll_seconds: float = Field(
        30.0, ge=0, description="poll the champion alias, so a promotion reaches every server; 0 turns it off"
    )
    database_timeout_seconds: float = Field(
        5.0, gt=0, description="longest a serving database connect, statement or logged write may take"
    )
    redis_timeout_seconds: float = Field(1.0, gt=0, description="longest a rate-limit Redis call may take")
    ready_cache_seconds: float = Field(
        1.0, ge=0, description="how long /health/ready reuses its dependency checks"
    )
    # The two below apply where the log's writer thread commits (PostgreSQL); on SQLite each
    # event-loop turn's predictions are committed together on the loop itself.
    log_batch_size: int = Field(16, ge=1, description="predictions that close a commit's batch early")
    log_wait_ms: float = Field(
        1.0, ge=0, description="how long a commit waits for more predictions, while that pays (0: never)"
    )


class BatchSettings(BaseModel):
    """Batch scoring of the whole customer base."""

    batch_rows: int = Field(100_000, ge=100, description="rows read, validated and scored at a time")
    num_threads: int = Field(2, ge=1, description="LightGBM threads for scoring")
    horizon_months: float = Field(12.0, gt=0, description="months of revenue at risk")
    value_column: str | None = Field("monthly_charges", description="monthly value per customer")
    spark_master: str = Field("local[*]", description="Spark master URL for --engine spark")
    compiled: Literal["auto", "on", "off"] = Field(
        "auto", description="score with trees compiled to native code (auto: where they compile; on: or fail)"
    )


class FeatureStoreSettings(BaseModel):
    """The feature store (Feast): point-in-time training sets and online features by customer id."""

    project: str = Field("churn", pattern=r"^[a-z][a-z0-9_]{0,39}$", description="the Feast project")
    redis_url: str | None = Field(None, description="Redis online store; SQLite under home if unset")
    registry_url: str | None = Field(
        None, description="SQL registry (PostgreSQL URL); a file under home if unset"
    )
    ttl_days: float = Field(365.0, gt=0, description="how old stored features may be before they are stale")
    stale: Literal["error", "flag"] = Field(
        "error", description="a lookup of stale features: a 409 naming their age, or an answer flagged stale"
    )
