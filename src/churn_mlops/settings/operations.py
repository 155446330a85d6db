"""Settings of operations: monitoring and its alert rules, rollouts, the dashboard, the loop."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator


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
