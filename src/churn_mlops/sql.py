"""SQL URLs and engines, for every part that talks to a database: data sources and sinks, batch
output, the key store, the prediction log's migrations and the monitoring store.

SQLAlchemy only, so the model server can use it without the data layer's file readers.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from churn_mlops.errors import SourceError


def database_url(url: str) -> sa.URL:
    """Parse a SQLAlchemy URL, choosing psycopg 3 as PostgreSQL's driver when none is named."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise SourceError(f"{url}: not a valid database URL") from exc
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_engine(url: str) -> sa.Engine:
    """An engine for a database URL, with errors that name the URL (password hidden)."""
    parsed = database_url(url)
    try:
        return sa.create_engine(parsed)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise SourceError(f"{safe_url(parsed)}: unsupported database ({exc})") from exc


def sqlite_file(engine: sa.Engine) -> Path | None:
    """The database file of a SQLite engine; None for other databases and in-memory SQLite."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    return Path(str(database))


def safe_url(url: sa.URL) -> str:
    """The URL with any password hidden."""
    return url.render_as_string(hide_password=True)
