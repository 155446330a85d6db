"""Rollouts: which model shadows (or takes a share of) the champion's traffic, and the shadow's scores.

The DDL is written out here, not taken from the modules that use the tables, so that this
revision stays what it was when later ones change those.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create rollouts and shadow_predictions."""
    op.create_table(
        "rollouts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("champion_version", sa.String(32), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("started_at", sa.String(32), nullable=False),
        sa.Column("started_by", sa.String(100), nullable=False),
        sa.Column("ended_at", sa.String(32), nullable=True),
        sa.Column("ended_by", sa.String(100), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_table(
        "shadow_predictions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("prediction", sa.SmallInteger(), nullable=False),
        sa.Column("champion_version", sa.String(32), nullable=False),
        sa.Column("champion_probability", sa.Float(), nullable=False),
        sa.Column("champion_prediction", sa.SmallInteger(), nullable=False),
    )
    op.create_index("ix_shadow_predictions_version_at", "shadow_predictions", ["model_version", "at"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index("ix_shadow_predictions_version_at", "shadow_predictions")
    op.drop_table("shadow_predictions")
    op.drop_table("rollouts")
