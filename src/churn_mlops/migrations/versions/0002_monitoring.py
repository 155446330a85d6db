"""The monitoring tables: state, day profiles, scores for the label join, labels, windows, alerts.

The DDL is written out here, not taken from `monitoring/tables.py`, so that this revision stays
what it was when later ones change those.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the six monitoring tables and their indexes."""
    op.create_table(
        "monitor_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "monitor_profiles",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("source", sa.String(16), primary_key=True),
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("profile", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "monitor_scores",
        sa.Column("prediction_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("prediction", sa.SmallInteger(), nullable=False),
        sa.Column("slices", sa.Text()),
    )
    op.create_index("ix_monitor_scores_version_at", "monitor_scores", ["model_version", "at_ms"])
    op.create_index("ix_monitor_scores_customer", "monitor_scores", ["customer_id"])
    op.create_table(
        "labels",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("churned", sa.Boolean(), nullable=False),
        sa.Column("observed_ms", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("ingested_at", sa.String(32), nullable=False),
        sa.UniqueConstraint("customer_id", "observed_ms", name="uq_labels_customer_observed"),
    )
    op.create_index("ix_labels_observed", "labels", ["observed_ms"])
    _windows()
    _alerts()


def _windows() -> None:
    op.create_table(
        "monitor_windows",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("start_day", sa.String(10), primary_key=True),
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("end_day", sa.String(10), nullable=False),
        sa.Column("predictions", sa.BigInteger(), nullable=False),
        sa.Column("drift_share", sa.Float()),
        sa.Column("drifted", sa.Boolean(), nullable=False),
        sa.Column("realised_roc_auc", sa.Float()),
        sa.Column("estimated_roc_auc", sa.Float()),
        sa.Column("coverage", sa.Float()),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("computed_at", sa.String(32), nullable=False),
    )


def _alerts() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("window_start", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("fired_at", sa.String(32), nullable=False),
        sa.Column("resolved_at", sa.String(32)),
        sa.Column("notified", sa.String(16)),
        sa.UniqueConstraint("rule", "kind", "window_start", "model_version", name="uq_alerts_rule_window"),
    )


def downgrade() -> None:
    """Drop the monitoring tables, results and labels with them."""
    for table in (
        "alerts",
        "monitor_windows",
        "labels",
        "monitor_scores",
        "monitor_profiles",
        "monitor_state",
    ):
        op.drop_table(table)
