"""The monitoring tables in the serving database (created by the Alembic migration 0002).

Days are ISO dates and times ISO-8601 text in UTC, readable on every backend; the times that
the label join compares are epoch milliseconds, so the same SQL adds a horizon everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

WATERMARK = "watermark:predictions"  # monitor_state names: the last prediction id profiled,
LAST_PREDICTION = "last_prediction_at"  # the newest prediction's time,
LAST_RUN = "last_run_at"  # when the last monitoring run ended,
LOCK = "lock:monitor"  # and who holds the run lock
metadata = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only

state = sa.Table(
    "monitor_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
)

profiles = sa.Table(
    "monitor_profiles",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("source", sa.String(16), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("profile", sa.Text, nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
)

scores = sa.Table(
    "monitor_scores",
    metadata,
    sa.Column("prediction_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.String(200), nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("prediction", sa.SmallInteger, nullable=False),
    sa.Column("slices", sa.Text),  # {"keys": ["contract=One year", "tenure=12-24"]}
    sa.Index("ix_monitor_scores_version_at", "model_version", "at_ms"),
    sa.Index("ix_monitor_scores_customer", "customer_id"),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(200), nullable=False),
    sa.Column("churned", sa.Boolean, nullable=False),
    sa.Column("observed_ms", sa.BigInteger, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("ingested_at", sa.String(32), nullable=False),
    sa.UniqueConstraint("customer_id", "observed_ms", name="uq_labels_customer_observed"),
    sa.Index("ix_labels_observed", "observed_ms"),
)

windows = sa.Table(
    "monitor_windows",
    metadata,
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("start_day", sa.String(10), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("end_day", sa.String(10), nullable=False),
    sa.Column("predictions", sa.BigInteger, nullable=False),
    sa.Column("drift_share", sa.Float),
    sa.Column("drifted", sa.Boolean, nullable=False),
    sa.Column("realised_roc_auc", sa.Float),
    sa.Column("estimated_roc_auc", sa.Float),
    sa.Column("coverage", sa.Float),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("computed_at", sa.String(32), nullable=False),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("window_start", sa.String(32), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("fired_at", sa.String(32), nullable=False),
    sa.Column("resolved_at", sa.String(32)),
    sa.Column("notified", sa.String(16)),
    sa.UniqueConstraint("rule", "kind", "window_start", "model_version", name="uq_alerts_rule_window"),
)


def now_text() -> str:
    """The current UTC time as ISO-8601 text, to the millisecond: the stamps these tables compare."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")
