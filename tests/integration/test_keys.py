"""API keys on real SQLite and PostgreSQL: only hashes stored, revocation within the cache TTL, the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from churn_mlops.cli.keys import app
from churn_mlops.errors import ConfigError, NotFoundError
from churn_mlops.serving.keys import DuplicateKeyError, KeyStore, KeyStoreError
from tests.faults import FreezableProxy, HungServer

runner = CliRunner()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh serving database: a SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serving' / 'serving.db'}"
        return
    engine: sa.Engine = request.getfixturevalue("postgres_engine")
    schema = f"churn_test_{uuid.uuid4().hex[:10]}"
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = engine.url.update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture
def store(database_url: str) -> Iterator[KeyStore]:
    """A key store without caching, so every check reads the database."""
    keys = KeyStore(database_url, cache_seconds=0)
    yield keys
    keys.close()


def stored_rows(url: str) -> list[sa.Row[tuple[str, str, str | None]]]:
    """The api_keys table as the database holds it."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.text("SELECT name, key_hash, revoked_at FROM api_keys ORDER BY id")
            return list(connection.execute(query).all())
    finally:
        engine.dispose()


def test_create_authenticate_revoke_list(store: KeyStore) -> None:
    key, created = store.create("web-app", ["predict"])
    admin_key, _ = store.create("ops", ["admin", "predict"])
    assert key.startswith("churn_")
    assert len(key) >= 6 + 43
    assert created.scopes == frozenset({"predict"})
    assert store.authenticate(key) == created
    authenticated = store.authenticate(admin_key)
    assert authenticated is not None
    assert authenticated.scopes == frozenset({"admin", "predict"})
    assert store.authenticate(key + "x") is None
    assert store.authenticate("not-a-key") is None
    revoked = store.revoke("web-app")
    assert (revoked.name, revoked.revoked) == ("web-app", True)
    assert store.authenticate(key) is None
    assert store.authenticate(admin_key) is not None
    assert [(k.name, k.revoked) for k in store.list()] == [("web-app", True), ("ops", False)]


def test_only_the_hash_is_stored(store: KeyStore, database_url: str) -> None:
    key, _ = store.create("web-app", ["predict"])
    [row] = stored_rows(database_url)
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(tuple(row))


def test_names_are_unique_among_active_keys(store: KeyStore) -> None:
    first, _ = store.create("web-app", ["predict"])
    with pytest.raises(DuplicateKeyError, match="web-app"):
        store.create("web-app", ["admin"])
    store.revoke("web-app")
    second, _ = store.create("web-app", ["predict"])
    assert store.authenticate(first) is None
    assert store.authenticate(second) is not None
    assert [k.revoked for k in store.list()] == [True, False]


def test_bad_requests_are_clear_errors(store: KeyStore) -> None:
    with pytest.raises(ConfigError, match="admin, predict"):
        store.create("web-app", ["predict", "train"])
    with pytest.raises(ConfigError, match="scope"):
        store.create("web-app", [])
    with pytest.raises(ConfigError, match="name"):
        store.create("  ", ["predict"])
    with pytest.raises(NotFoundError, match="ghost"):
        store.revoke("ghost")
    store.create("web-app", ["predict"])
    store.revoke("web-app")
    with pytest.raises(NotFoundError, match="web-app"):
        store.revoke("web-app")
    assert [k.name for k in store.list()] == ["web-app"]


def test_a_revoked_key_stops_working_within_the_cache_ttl(database_url: str) -> None:
    clock = FakeClock()
    server = KeyStore(database_url, cache_seconds=2.0, clock=clock)
    admin = KeyStore(database_url, cache_seconds=0)
    try:
        key, _ = admin.create("web-app", ["predict"])
        assert server.authenticate(key) is not None
        admin.revoke("web-app")
        clock.now += 1.9
        assert server.authenticate(key) is not None, "answered from the cache inside the TTL"
        clock.now += 0.2
        assert server.authenticate(key) is None
    finally:
        server.close()
        admin.close()


def test_changes_through_the_same_store_apply_at_once(database_url: str) -> None:
    store = KeyStore(database_url, cache_seconds=60.0, clock=FakeClock())
    try:
        unknown_yet = "churn_" + "a" * 43
        assert store.authenticate(unknown_yet) is None
        key, _ = store.create("web-app", ["predict"])
        assert store.authenticate(key) is not None
        store.revoke("web-app")
        assert store.authenticate(key) is None
    finally:
        store.close()


def test_the_table_survives_a_second_store(database_url: str) -> None:
    first = KeyStore(database_url, cache_seconds=0)
    key, _ = first.create("web-app", ["predict"])
    first.close()
    second = KeyStore(database_url, cache_seconds=0)
    try:
        assert second.authenticate(key) is not None
    finally:
        second.close()


def test_workers_starting_together_share_one_table(database_url: str) -> None:
    def start() -> None:
        KeyStore(database_url).close()

    with ThreadPoolExecutor(8) as pool:
        for started in [pool.submit(start) for _ in range(8)]:
            started.result()
    assert stored_rows(database_url) == []


def keys_cli(*args: str, code: int = 0) -> str:
    """Run `churn keys args...`, check the exit code, and return stdout (stderr on failure)."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}{result.stderr}"
    assert "Traceback" not in result.output + result.stderr
    return result.stdout if code == 0 else result.stderr


def test_cli_create_list_revoke(churn_home: Path) -> None:
    created = json.loads(keys_cli("create", "--name", "web-app", "--scope", "predict", "--json"))
    assert set(created) == {"name", "key", "scopes", "created_at"}
    assert (created["name"], created["scopes"]) == ("web-app", ["predict"])
    store = KeyStore(f"sqlite:///{churn_home / 'serving.db'}", cache_seconds=0)
    try:
        assert store.authenticate(created["key"]) is not None
        listed = keys_cli("list", "--json")
        assert json.loads(listed) == [
            {"name": "web-app", "scopes": ["predict"], "created_at": created["created_at"], "revoked": False}
        ]
        assert created["key"] not in listed
        revoked = json.loads(keys_cli("revoke", "web-app", "--json"))
        assert revoked["revoked"] is True
        assert store.authenticate(created["key"]) is None
    finally:
        store.close()


def test_cli_prints_the_key_once_with_a_warning(churn_home: Path) -> None:
    result = runner.invoke(app, ["create", "--name", "ops", "--scope", "admin", "--scope", "predict"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("churn_")
    assert "cannot be shown again" in result.stderr
    table = keys_cli("list")
    assert "ops" in table
    assert "admin, predict" in table
    assert key not in table
    assert hashlib.sha256(key.encode()).hexdigest() not in table


def test_cli_errors_are_one_line(churn_home: Path) -> None:
    assert "admin, predict" in keys_cli("create", "--name", "x", "--scope", "root", code=2)
    keys_cli("create", "--name", "x", "--scope", "predict")
    assert "x" in keys_cli("create", "--name", "x", "--scope", "predict", code=1)
    assert "ghost" in keys_cli("revoke", "ghost", code=5)


@pytest.mark.postgres
def test_a_hung_key_database_fails_a_lookup_within_the_timeout_and_recovers(
    postgres_engine: sa.Engine,
) -> None:
    """A lookup the database does not answer ends in a KeyStoreError, not a request held forever."""
    with FreezableProxy(postgres_engine.url.port or 5432) as proxy:
        url = postgres_engine.url.set(port=proxy.port).render_as_string(hide_password=False)
        store = KeyStore(url, cache_seconds=0, timeout=2.0)
        name = f"hung-{uuid.uuid4().hex[:8]}"
        key, _ = store.create(name, ["predict"])

        async def freeze_and_thaw() -> None:  # one event loop: its threads may wait on the frozen proxy
            assert await store.authenticate_async(key) is not None
            proxy.freeze()
            with pytest.raises(KeyStoreError, match="no answer within 2 s"):
                await asyncio.wait_for(store.authenticate_async(key), 30)
            proxy.thaw()
            assert await asyncio.wait_for(store.authenticate_async(key), 30) is not None

        try:
            asyncio.run(freeze_and_thaw())
            store.ping()
        finally:
            proxy.thaw()
            store.revoke(name)
            store.close()


def test_an_unreachable_key_database_is_one_line_without_the_password() -> None:
    with HungServer() as hung, pytest.raises(KeyStoreError, match="timeout") as raised:
        KeyStore(f"postgresql://churn:hunter2@127.0.0.1:{hung.port}/test", timeout=1.0)
    assert "hunter2" not in str(raised.value)
    assert "\n" not in str(raised.value)
