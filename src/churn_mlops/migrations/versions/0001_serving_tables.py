"""The serving tables: `predictions` (the prediction log) and `api_keys`, each where it is absent.

A database whose tables the serving code made itself, before it had migrations, keeps them and
their rows; it is only stamped. The DDL is written out here, not taken from the live table
definitions, so that this revision stays what it was when later ones change those.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_ACTIVE = sa.text("revoked_at IS NULL")


def upgrade() -> None:
    """Create `predictions` and `api_keys` (with its index of active names) where they are absent."""
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("predictions"):
        _create_predictions()
    if not inspector.has_table("api_keys"):
        _create_api_keys()


def downgrade() -> None:
    """Drop both tables, rows and all."""
    op.drop_table("api_keys")
    op.drop_table("predictions")


def _create_predictions() -> None:
    op.create_table(
        "predictions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_name", sa.Text(), nullable=True),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("prediction", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
    )


def _create_api_keys() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.String(32), nullable=True),
    )
    op.create_index(
        "ix_api_keys_active_name",
        "api_keys",
        ["name"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
