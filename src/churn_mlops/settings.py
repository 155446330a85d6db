"""Typed settings, read from CHURN_* environment variables and an optional YAML config file.

Nested sections use a double underscore: CHURN_DATA__SPEC=path.yaml. The config file is
`churn.yaml` in the working directory, or the file named by CHURN_CONFIG.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from churn_mlops.errors import ConfigError


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


class DriftSettings(BaseModel):
    """How a window's distributions are compared with the reference profile."""

    method: Literal["auto", "psi", "js", "chi2"] = Field(
        "auto", description="auto: chi-square on small windows, else PSI (numeric) and JS (categorical)"
    )
    psi: float = Field(0.2, gt=0, description="population stability index above which a feature drifts")
    js: float = Field(0.1, gt=0, le=1, description="Jensen-Shannon distance above which a feature drifts")
    p_value: float = Field(0.01, gt=0, lt=1, description="chi-square p-value below which a feature drifts")
    small_window: int = Field(1000, ge=1, description="windows of at most this many rows use chi-square")
    learned: bool = Field(
        True, description="raise each threshold to what sampling noise alone reaches at the window's size"
    )
    share: float = Field(0.1, ge=0, le=1, description="share of drifted features above which a window drifts")
    score_psi: float = Field(0.2, gt=0, description="PSI of the score distribution above which scores drift")


RULE_METRIC = re.compile(
    r"(drift\.share|drift\.score(\.drifted)?|predictions|hours_since_last_prediction"
    r"|labels\.coverage(_due)?|quality\.(missing|unknown_category|out_of_range)"
    r"|drift\.features\.[a-z0-9_]+\.(psi|js|drifted)"
    r"|(realised|estimated)\.(rows|positive_rate|roc_auc|roc_auc_drop|pr_auc|precision|recall"
    r"|calibration_error|expected_value))"
)


class AlertRule(BaseModel):
    """One alert rule: a window metric, a comparison and for how many windows it must hold."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    metric: str = Field(description="a window metric (see docs/monitoring.md), e.g. drift.share")
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: float
    severity: Literal["info", "warning", "critical"] = "warning"
    windows: int = Field(1, ge=1, description="consecutive windows the condition must hold")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if not RULE_METRIC.fullmatch(metric):
            raise ValueError(f"{metric!r} is not a monitoring metric (see docs/monitoring.md for the list)")
        return metric


DEFAULT_RULES = [
    AlertRule(name="data_drift", metric="drift.share", op=">", threshold=0.1, severity="warning"),
    AlertRule(name="score_drift", metric="drift.score", op=">", threshold=0.2, severity="warning"),
    AlertRule(name="realised_auc_drop", metric="realised.roc_auc_drop", threshold=0.05, severity="critical"),
    AlertRule(name="estimated_auc_drop", metric="estimated.roc_auc_drop", threshold=0.05, severity="warning"),
    AlertRule(name="no_predictions", metric="hours_since_last_prediction", threshold=24, severity="critical"),
    AlertRule(name="label_coverage", metric="labels.coverage_due", op="<", threshold=0.5, severity="info"),
]


class MonitoringSettings(BaseModel):
    """Drift, realised and estimated performance, alerts and where they are sent."""

    label_horizon_days: float = Field(
        30.0, gt=0, description="an outcome counts for a prediction if observed this many days after it"
    )
    drift: DriftSettings = DriftSettings()
    rules: list[AlertRule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    webhooks: list[SecretStr] = Field([], description="URLs that get every alert as a JSON POST")
    webhook_timeout: float = Field(5.0, gt=0, description="seconds a webhook may take to answer")
    webhook_retries: int = Field(3, ge=0, description="retries of a failing webhook, with backoff")
    chunk_rows: int = Field(25_000, ge=100, description="prediction log rows read at a time")
    min_window_rows: int = Field(
        500,
        ge=0,
        description="windows with fewer predictions (today's, early on) neither fire nor clear alerts",
    )

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[AlertRule]) -> list[AlertRule]:
        names = [rule.name for rule in rules]
        if len(names) != len(set(names)):
            raise ValueError(f"alert rule names must be unique, got {names}")
        return rules


class RolloutSettings(BaseModel):
    """Guard rules that stop a canary by themselves, returning all traffic to the champion."""

    min_requests: int = Field(50, ge=1, description="canary answers needed before the guards judge")
    max_error_rate: float = Field(0.02, ge=0, le=1, description="share of canary scorings that may fail")
    max_p99_ms: float = Field(250.0, gt=0, description="p99 of the canary's scoring time, in milliseconds")
    max_score_psi: float = Field(
        0.25, gt=0, description="PSI of the canary's scores against the champion's, in ten bins"
    )
    poll_seconds: float = Field(
        2.0, gt=0, le=60, description="how often each server reads the rollout in force"
    )
    min_labels: int = Field(
        200, ge=10, description="labelled customers each model needs before the realised guard judges"
    )
    max_auc_drop: float = Field(
        0.05, gt=0, le=1, description="realised ROC AUC the canary may trail the champion by"
    )


class DashboardSettings(BaseModel):
    """The web dashboard served at /dashboard: sign-in links and browser sessions."""

    public_url: str | None = Field(
        None, description="the server's address in sign-in links (default http://HOST:PORT)"
    )
    link_ttl_seconds: int = Field(300, ge=10, le=86_400, description="how long a sign-in link works")
    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="how long a browser stays signed in")


class LoopSettings(BaseModel):
    """The closed loop (`churn loop run`): when to retrain, and on what."""

    drift_share: float = Field(
        0.1, ge=0, le=1, description="retrain when the latest complete day drifted on this share of features"
    )
    auc_drop: float = Field(
        0.05, ge=0, le=1, description="retrain when realised (else estimated) ROC AUC is this far below test"
    )
    max_model_age_days: float = Field(30.0, gt=0, description="retrain a champion older than this")
    min_new_labels: int = Field(
        1000, ge=1, description="retrain when this many outcomes arrived since the champion was trained"
    )
    source: str | None = Field(
        None,
        description="customers to join with the outcomes (path or SQL URL); default: the prediction log",
    )
    source_table: str | None = Field(None, description="the table to read, for a database source")
    keep_training_data: bool = Field(
        True, description="train on the champion's training rows too; a customer's newest row wins"
    )
    max_log_rows: int = Field(500_000, ge=1000, description="newest labelled predictions taken from the log")


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


class Settings(BaseSettings):
    """All settings of churn-mlops; every piece of state lives under `home`."""

    model_config = SettingsConfigDict(env_prefix="CHURN_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(Path("churn-home"), description="the directory that holds all state")
    data: DataSettings = DataSettings()
    training: TrainingSettings = TrainingSettings()
    registry: RegistrySettings = RegistrySettings()
    serving: ServingSettings = ServingSettings()
    batch: BatchSettings = BatchSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    dashboard: DashboardSettings = DashboardSettings()
    rollout: RolloutSettings = RolloutSettings()
    loop: LoopSettings = LoopSettings()
    feature_store: FeatureStoreSettings = FeatureStoreSettings()

    @property
    def lake_dir(self) -> Path:
        """Versioned, validated data."""
        return self.home / "lake"

    @property
    def quarantine_dir(self) -> Path:
        """Rows that failed validation, with reasons, one file per run."""
        return self.home / "quarantine"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking and registry URI: a server, or SQLite under home."""
        return self.registry.tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def serving_database_url(self) -> str:
        """Where the prediction log and API keys live: a database URL, or SQLite under home."""
        return self.serving.database_url or f"sqlite:///{(self.home / 'serving.db').resolve()}"

    @property
    def feature_repo_dir(self) -> Path:
        """The generated Feast feature repository, its registry and its SQLite online store."""
        return self.home / "features"

    @property
    def models_dir(self) -> Path:
        """Verified local copies of model versions."""
        return self.home / "models"

    @property
    def audit_log(self) -> Path:
        """The audit trail: every gate decision, promotion, rollback and loop run, one JSON line each."""
        return self.home / "registry" / "audit.jsonl"

    @property
    def demo_dir(self) -> Path:
        """The demo's synthetic customer database."""
        return self.home / "demo"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order of precedence: arguments, environment, config file."""
        config = Path(os.environ.get("CHURN_CONFIG", "churn.yaml"))
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=config)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once; a bad value is a ConfigError naming the first bad field."""
    try:
        return Settings()
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise ConfigError(f"settings: {field}: {problem['msg']}") from None
