"""Sign-in links and browser sessions of the dashboard, stored as SHA-256 hashes in the serving database.

A sign-in link carries a random token that works once, before it expires; redeeming it opens
a session whose token goes in an HttpOnly, SameSite=Strict cookie. Both live in the database,
so a link made by `churn dashboard link` works on any worker or replica, and a session opened
on one is known to all. As with API keys, 256 random bits need a fast hash, not a slow one.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from churn_mlops.errors import ChurnError, first_line
from churn_mlops.sql import create_engine

LINK, SESSION = "link", "session"
_CACHE_SECONDS = 5.0  # a session ended on another worker stops working within this
_MAX_TOKEN_LENGTH = 100

metadata = sa.MetaData()
tokens = sa.Table(
    "dashboard_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("key_name", sa.String(100), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("expires_at", sa.String(32), nullable=False),
    sa.Column("used_at", sa.String(32), nullable=True),
)


class SessionStoreError(ChurnError):
    """The serving database cannot be used for dashboard sessions."""


class SessionStore:
    """Makes and redeems sign-in links, and checks and ends sessions."""

    def __init__(
        self,
        url: str,
        *,
        session_hours: float = 12.0,
        timeout: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.session_ttl = timedelta(hours=session_hours)
        self._clock = clock
        self._engine = create_engine(url, timeout)
        self._cache: dict[str, tuple[float, str | None]] = {}

    def close(self) -> None:
        """Release the connections."""
        self._engine.dispose()

    def create_link(self, name: str, ttl_seconds: float) -> str:
        """A one-time sign-in token for `name`, valid for `ttl_seconds`."""
        return self._issue(LINK, name, timedelta(seconds=ttl_seconds))

    def redeem_link(self, token: str) -> str | None:
        """A new session token for a valid, unused link token (which is then used up), else None."""
        digest = _digest(token)
        if digest is None:
            return None
        now = _text(self._clock())
        with self._errors(), self._engine.begin() as connection:
            name = connection.scalar(sa.select(tokens.c.key_name).where(*_valid(digest, LINK, now)))
            used = connection.execute(
                tokens.update().where(*_valid(digest, LINK, now)).values(used_at=now)
            ).rowcount
        if name is None or used != 1:  # two redeems at once: only one update finds it unused
            return None
        return self.open_session(name)

    def open_session(self, name: str) -> str:
        """A session token for `name` (signed in with a key or a link)."""
        return self._issue(SESSION, name, self.session_ttl)

    def session(self, token: str) -> str | None:
        """Who the session belongs to; None for an unknown, ended or expired session."""
        digest = _digest(token)
        if digest is None:
            return None
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        with self._errors(), self._engine.connect() as connection:
            name = connection.scalar(
                sa.select(tokens.c.key_name).where(*_valid(digest, SESSION, _text(self._clock())))
            )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + _CACHE_SECONDS, name)
        return name

    def end_session(self, token: str) -> None:
        """Sign out: the session stops working."""
        digest = _digest(token)
        if digest is None:
            return
        self._cache.pop(digest, None)
        with self._errors(), self._engine.begin() as connection:
            connection.execute(
                tokens.update().where(tokens.c.token_hash == digest).values(used_at=_text(self._clock()))
            )

    def _issue(self, kind: str, name: str, ttl: timedelta) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._errors(), self._engine.begin() as connection:
            connection.execute(tokens.delete().where(tokens.c.expires_at < _text(now - timedelta(days=1))))
            connection.execute(
                tokens.insert().values(
                    token_hash=hashlib.sha256(token.encode()).hexdigest(),
                    kind=kind,
                    key_name=name,
                    created_at=_text(now),
                    expires_at=_text(now + ttl),
                )
            )
        return token

    def _errors(self) -> _Translate:
        return _Translate(self._engine)


class _Translate:
    """Turns a database error into a one-line SessionStoreError naming the database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if isinstance(exc, sa.exc.SQLAlchemyError):
            where = self.engine.url.render_as_string(hide_password=True)
            raise SessionStoreError(f"dashboard sessions at {where}: {first_line(exc)}") from exc


def _valid(digest: str, kind: str, now: str) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        tokens.c.token_hash == digest,
        tokens.c.kind == kind,
        tokens.c.used_at.is_(None),
        tokens.c.expires_at > now,
    )


def _digest(token: str) -> str | None:
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        return None
    return hashlib.sha256(token.encode()).hexdigest()


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")
