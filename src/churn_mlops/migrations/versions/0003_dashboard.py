"""The dashboard's tables: sign-in links and sessions, job runs, and the served traffic by day.

The DDL is written out here, not taken from the modules that use the tables, so that this
revision stays what it was when later ones change those.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create dashboard_tokens, job_runs and serving_traffic."""
    op.create_table(
        "dashboard_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("key_name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
        sa.Column("used_at", sa.String(32), nullable=True),
    )
    op.create_index("ix_dashboard_tokens_expires", "dashboard_tokens", ["expires_at"])
    op.create_table(
        "job_runs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("finished_at", sa.String(32), nullable=False),
        sa.Column("dataset", sa.String(100), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("rows_in", sa.BigInteger(), nullable=False),
        sa.Column("rows_valid", sa.BigInteger(), nullable=False),
        sa.Column("rows_quarantined", sa.BigInteger(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
    )
    op.create_index("ix_job_runs_kind_finished", "job_runs", ["kind", "finished_at"])
    op.create_table(
        "serving_traffic",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("route", sa.String(64), primary_key=True),
        sa.Column("status", sa.SmallInteger(), primary_key=True),
        sa.Column("bucket", sa.SmallInteger(), primary_key=True),
        sa.Column("requests", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_index("ix_job_runs_kind_finished", "job_runs")
    op.drop_index("ix_dashboard_tokens_expires", "dashboard_tokens")
    for table in ("serving_traffic", "job_runs", "dashboard_tokens"):
        op.drop_table(table)
