"""SQL URLs and engines, for every part that talks to a database: data sources and sinks, batch
output, the key store, the prediction log's migrations and the monitoring store.

SQLAlchemy only, so the model server can use it without the data layer's file readers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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


def create_engine(url: str, timeout: float | None = None) -> sa.Engine:
    """An engine for a database URL, with errors that name the URL (password hidden).

    With `timeout`, a connect and each statement take at most about that many seconds.
    """
    parsed = database_url(url)
    try:
        connect_args = timeout_args(parsed, timeout) if timeout else {}
        return sa.create_engine(parsed, connect_args=connect_args)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise SourceError(f"{safe_url(parsed)}: unsupported database ({exc})") from exc


def timeout_args(url: sa.URL, seconds: float) -> dict[str, Any]:
    """Driver arguments that bound a connect and each statement to about `seconds`.

    PostgreSQL (libpq drivers): connect_timeout (whole seconds, at least 2), a server-side
    statement_timeout added to the URL's options, and tcp_user_timeout so a peer that vanished
    fails the next send. SQLite: how long a statement waits for a lock. Arguments the URL sets
    itself are left to it.
    """
    millis = int(seconds * 1000)
    if url.get_backend_name() == "sqlite":
        args: dict[str, Any] = {"timeout": seconds}
    elif url.get_backend_name() == "postgresql" and url.get_driver_name() in {"psycopg", "psycopg2"}:
        args = {"connect_timeout": max(2, math.ceil(seconds)), "tcp_user_timeout": millis}
        options = str(url.query.get("options", ""))
        if "statement_timeout" not in options:
            args["options"] = f"{options} -c statement_timeout={millis}".strip()
    else:
        args = {}
    return {name: value for name, value in args.items() if name == "options" or name not in url.query}


def sqlite_file(engine: sa.Engine) -> Path | None:
    """The database file of a SQLite engine; None for other databases and in-memory SQLite."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    return Path(str(database))


def safe_url(url: sa.URL) -> str:
    """The URL with any password hidden."""
    return url.render_as_string(hide_password=True)
