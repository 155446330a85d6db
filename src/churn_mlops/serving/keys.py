"""API keys with scopes, stored as SHA-256 hashes in the serving database.

A key is `churn_` plus 32 random bytes (256 bits) from `secrets`. With that much entropy a fast,
unsalted hash is the right choice: bcrypt, scrypt and Argon2 slow down guessing of low-entropy
passwords, but no amount of guessing finds a 256-bit key, and the server must check a key on
every request. The plaintext key is returned once by `KeyStore.create` and never stored.

`authenticate` is on the request path (the server calls `authenticate_async`, which asks the
database off the event loop and gives up after `timeout`), so its answers (including "no such
key") are cached in memory for `cache_seconds`: a key revoked by another process stops working
within that time; one revoked through the same store stops at once. Supported databases: SQLite
and PostgreSQL, whose partial unique index keeps names unique among active keys.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from churn_mlops import migrations
from churn_mlops.errors import ChurnError, ConfigError, NotFoundError
from churn_mlops.sql import database_url, sqlite_file, timeout_args

SCOPES = frozenset({"predict", "admin", "view"})  # view: the dashboard and its data
KEY_PREFIX = "churn_"
MAX_NAME_LENGTH = 100
_MAX_KEY_LENGTH = 200
_MAX_CACHE_ENTRIES = 10_000

_metadata = sa.MetaData()
_active = sa.text("revoked_at IS NULL")
api_keys = sa.Table(
    "api_keys",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(MAX_NAME_LENGTH), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.String(200), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("revoked_at", sa.String(32), nullable=True),
    sa.Index("ix_api_keys_active_name", "name", unique=True, sqlite_where=_active, postgresql_where=_active),
)


class DuplicateKeyError(ChurnError):
    """An active API key with the same name already exists."""


class KeyStoreError(ChurnError):
    """The serving database cannot be reached or used."""


@dataclass(frozen=True)
class ApiKey:
    """An API key as the server sees it: its name and scopes, never the key itself."""

    name: str
    scopes: frozenset[str]
    created_at: str
    revoked: bool = False

    def to_json(self) -> dict[str, object]:
        """A JSON-ready document: name, sorted scopes, creation time, revoked flag."""
        return {
            "name": self.name,
            "scopes": sorted(self.scopes),
            "created_at": self.created_at,
            "revoked": self.revoked,
        }


def hash_key(key: str) -> str:
    """The stored form of a key: its SHA-256 as 64 hex digits."""
    return hashlib.sha256(key.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes as a set, or ConfigError naming the valid scopes."""
    chosen = frozenset(scopes)
    unknown = chosen - SCOPES
    if unknown or not chosen:
        problem = f"unknown scope(s) {', '.join(sorted(unknown))}" if unknown else "no scope given"
        raise ConfigError(f"{problem}; valid scopes: {', '.join(sorted(SCOPES))}")
    return chosen


def check_name(name: str) -> str:
    """The key name stripped of surrounding space, or ConfigError when empty or too long."""
    cleaned = name.strip()
    if not cleaned:
        raise ConfigError("an API key needs a non-empty name")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise ConfigError(f"API key names are at most {MAX_NAME_LENGTH} characters")
    return cleaned


class KeyStore:
    """Create, revoke, list and check API keys in the `api_keys` table of a SQL database."""

    def __init__(
        self,
        url: str,
        cache_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._lock = threading.Lock()
        self._engine = _create_engine(url, timeout)
        with self._errors():
            migrations.upgrade(self._engine)

    def create(self, name: str, scopes: Iterable[str]) -> tuple[str, ApiKey]:
        """Make a key; returns the plaintext key, which is shown this once and never stored."""
        name, chosen = check_name(name), check_scopes(scopes)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        created = ApiKey(name, chosen, datetime.now(UTC).isoformat(timespec="seconds"))
        row = {"name": name, "key_hash": hash_key(key), "scopes": " ".join(sorted(chosen))}
        with self._errors(), self._engine.begin() as connection:
            if connection.execute(_select_active(name)).first() is not None:
                raise DuplicateKeyError(f"an active API key named {name!r} exists; revoke it first")
            try:
                connection.execute(api_keys.insert().values(**row, created_at=created.created_at))
            except sa.exc.IntegrityError as exc:
                raise DuplicateKeyError(f"an active API key named {name!r} exists") from exc
        self._forget(name)
        return key, created

    def revoke(self, name: str) -> ApiKey:
        """Revoke the active key of this name; NotFoundError when there is none."""
        name = name.strip()
        with self._errors(), self._engine.begin() as connection:
            row = connection.execute(_select_active(name)).first()
            if row is None or not _mark_revoked(connection, row.id):
                raise NotFoundError(f"no active API key named {name!r}")
        self._forget(name)
        return _api_key(row, revoked=True)

    def list(self) -> builtins.list[ApiKey]:
        """Every key, active and revoked, oldest first."""
        with self._errors(), self._engine.connect() as connection:
            rows = connection.execute(sa.select(api_keys).order_by(api_keys.c.id)).all()
        return [_api_key(row, revoked=row.revoked_at is not None) for row in rows]

    def authenticate(self, key: str) -> ApiKey | None:
        """The active key matching this plaintext key; None for unknown or revoked keys."""
        digest, found = self._cached(key)
        if digest is not None:
            found = self._remember(digest, self._lookup(digest))
        return found

    async def authenticate_async(self, key: str) -> ApiKey | None:
        """`authenticate` for the event loop: off the loop, and a KeyStoreError after `timeout`."""
        digest, found = self._cached(key)
        if digest is not None:
            try:
                looked_up = await asyncio.wait_for(asyncio.to_thread(self._lookup, digest), self.timeout)
            except TimeoutError:
                raise KeyStoreError(f"API key store: no answer within {self.timeout:g} s") from None
            found = self._remember(digest, looked_up)
        return found

    def ping(self) -> None:
        """Raise KeyStoreError unless the database answers a query."""
        with self._errors(), self._engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def _lookup(self, digest: str) -> ApiKey | None:
        query = sa.select(api_keys).where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
        with self._errors(), self._engine.connect() as connection:
            row = connection.execute(query).first()
        # The index finds the row; the comparison that decides is constant-time all the same.
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return _api_key(row, revoked=False)

    def _cached(self, key: str) -> tuple[str | None, ApiKey | None]:
        """(None, the answer) when it needs no database; else (the digest to look up, None)."""
        if not key.startswith(KEY_PREFIX) or len(key) > _MAX_KEY_LENGTH:
            return None, None
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > self._clock():
            return None, cached[1]
        return digest, None

    def _remember(self, digest: str, found: ApiKey | None) -> ApiKey | None:
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) >= _MAX_CACHE_ENTRIES:
                    # Unknown keys are cached too, so a flood of made-up keys must not grow memory.
                    self._cache.clear()
                self._cache[digest] = (self._clock() + self.cache_seconds, found)
        return found

    def _forget(self, name: str) -> None:
        with self._lock:
            stale = [d for d, (_, found) in self._cache.items() if found is None or found.name == name]
            for digest in stale:
                del self._cache[digest]

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sa.exc.SQLAlchemyError, migrations.MigrationError) as exc:
            where = self._engine.url.render_as_string(hide_password=True)
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise KeyStoreError(f"API key store at {where}: {reason}") from exc


def _create_engine(url: str, timeout: float) -> sa.Engine:
    parsed = database_url(url)
    # pre_ping: after the database restarts, the next request gets a fresh connection, not an error
    engine = sa.create_engine(
        parsed, connect_args=timeout_args(parsed, timeout), pool_pre_ping=True, pool_timeout=timeout
    )
    database = sqlite_file(engine)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    return engine


def _select_active(name: str) -> sa.Select[*tuple[Any, ...]]:
    return sa.select(api_keys).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))


def _mark_revoked(connection: sa.Connection, key_id: int) -> bool:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    update = api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
    return connection.execute(update.values(revoked_at=now)).rowcount == 1


def _api_key(row: sa.Row[*tuple[Any, ...]], revoked: bool) -> ApiKey:
    scopes = frozenset(str(row.scopes).split())
    return ApiKey(str(row.name), scopes, str(row.created_at), revoked)
