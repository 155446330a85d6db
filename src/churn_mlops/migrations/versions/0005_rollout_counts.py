"""Each server's canary counts, so `churn rollout status` can sum a canary's answers and failures.

The DDL is written out here, not taken from the modules that use the table, so that this
revision stays what it was when later ones change it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create rollout_counts."""
    op.create_table(
        "rollout_counts",
        sa.Column("rollout_id", sa.BigInteger(), primary_key=True),
        sa.Column("server", sa.String(200), primary_key=True),
        sa.Column("answered", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("agreed", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("rollout_counts")
