"""Alembic's environment: runs the revisions on the connection that `upgrade` hands over."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context


def run_migrations(connection: sa.Connection) -> None:
    """Migrate inside the caller's transaction; SQLite alters tables in batch mode (copy and swap)."""
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if not isinstance(_connection, sa.Connection):
    raise RuntimeError("run the serving migrations through churn_mlops.migrations.upgrade()")
run_migrations(_connection)
