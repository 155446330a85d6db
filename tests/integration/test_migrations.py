"""Serving database migrations on real SQLite and PostgreSQL: fresh and older databases, repeats, races."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from churn_mlops import migrations
from churn_mlops.migrations import MigrationError, current, head, upgrade
from churn_mlops.serving.keys import KeyStore, KeyStoreError, api_keys, hash_key
from churn_mlops.serving.predlog import PredictionLog, PredictionLogError, predictions_table
from tests.integration.predlog_rows import logged

SERVING_TABLES = {"predictions", "api_keys"}
OLD_KEY = "churn_" + "k" * 43
WORKERS = 6
# A worker process: imports everything, says it is ready, waits for the word, then upgrades.
WORKER = """
import sys
from churn_mlops.migrations import upgrade
print("ready", flush=True)
sys.stdin.readline()
upgrade(sys.argv[1])
"""

NewDatabase = Callable[[], str]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NewDatabase]:
    """Makes empty databases: SQLite files, or new PostgreSQL schemas dropped after the test."""
    schemas: list[str] = []
    engine: sa.Engine | None = None
    if request.param == "postgres":
        engine = request.getfixturevalue("postgres_engine")

    def make() -> str:
        if engine is None:
            return f"sqlite:///{tmp_path / uuid.uuid4().hex[:8]}.db"
        schemas.append(f"churn_mig_{uuid.uuid4().hex[:10]}")
        with engine.begin() as connection:
            connection.execute(sa.text(f"CREATE SCHEMA {schemas[-1]}"))
        url = engine.url.update_query_dict({"options": f"-csearch_path={schemas[-1]}"})
        return url.render_as_string(hide_password=False)

    yield make
    if engine is not None:
        with engine.begin() as connection:
            for schema in schemas:
                connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


def run(url: str, statement: str) -> list[sa.Row[Any]]:
    """The rows of one statement, run in its own transaction."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            result = connection.execute(sa.text(statement))
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    """The database's tables."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def schema(url: str) -> dict[str, object]:
    """The serving tables as the database describes them: columns, keys, constraints, indexes."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        inspector = sa.inspect(engine)
        described = {table: _describe(inspector, table) for table in sorted(SERVING_TABLES)}
        if engine.dialect.name == "sqlite":
            query = "SELECT tbl_name, name, sql FROM sqlite_master WHERE sql IS NOT NULL"
            with engine.connect() as connection:
                ddl = connection.exec_driver_sql(query)
                described["ddl"] = sorted((name, sql) for table, name, sql in ddl if table in SERVING_TABLES)
        return described
    finally:
        engine.dispose()


def _describe(inspector: sa.Inspector, table: str) -> dict[str, object]:
    columns = [(c["name"], str(c["type"]), c["nullable"], c["default"]) for c in inspector.get_columns(table)]
    indexes = [
        (i["name"], i["column_names"], bool(i["unique"]), _options(i)) for i in inspector.get_indexes(table)
    ]
    return {
        "columns": columns,
        "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
        "unique": sorted(str(u["column_names"]) for u in inspector.get_unique_constraints(table)),
        "indexes": sorted(indexes, key=str),
    }


def _options(index: Any) -> dict[str, str]:
    return {name: str(value) for name, value in index["dialect_options"].items()}


def make_the_old_way(url: str) -> None:
    """Create the serving tables as the serving code did before migrations, with a row in each."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    predictions = predictions_table()
    try:
        predictions.create(engine)
        api_keys.create(engine)
        with engine.begin() as connection:
            connection.execute(
                predictions.insert().values(
                    request_id="old-1",
                    at=datetime(2025, 3, 1, 12, 30, tzinfo=UTC),
                    key_name="web-app",
                    model_version="3",
                    inputs='{"tenure": 12}',
                    probability=0.75,
                    prediction=1,
                    latency_ms=2.5,
                )
            )
            connection.execute(
                api_keys.insert().values(
                    name="web-app", key_hash=hash_key(OLD_KEY), scopes="predict", created_at="2025-03-01"
                )
            )
    finally:
        engine.dispose()


def test_a_fresh_database_gets_the_tables_the_serving_code_defines(new_database: NewDatabase) -> None:
    url, made_the_old_way = new_database(), new_database()
    assert current(url) is None
    upgrade(url)
    make_the_old_way(made_the_old_way)

    assert tables(url) >= SERVING_TABLES | {"alembic_version"}
    assert current(url) == head()
    assert schema(url) == schema(made_the_old_way)


def test_a_database_made_before_migrations_keeps_its_rows_and_is_stamped(new_database: NewDatabase) -> None:
    url = new_database()
    make_the_old_way(url)
    before = schema(url)

    upgrade(url)

    assert current(url) == head()
    assert run(url, "SELECT version_num FROM alembic_version") == [(head(),)]
    assert schema(url) == before
    store = KeyStore(url, cache_seconds=0)
    log = PredictionLog(url)
    log.start()
    try:
        authenticated = store.authenticate(OLD_KEY)
        assert authenticated is not None
        assert authenticated.name == "web-app"
        assert logged(log)["request_id"].to_list() == ["old-1"]
    finally:
        log.close()
        store.close()


def test_a_second_upgrade_only_reads(new_database: NewDatabase) -> None:
    url = new_database()
    upgrade(url)
    run(url, "INSERT INTO api_keys (name, key_hash, scopes, created_at) VALUES ('a', 'h', 'predict', 'now')")
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", record)  # every engine, the upgrade's own too
    try:
        upgrade(url)
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)

    assert any("alembic_version" in statement for statement in statements), statements
    writes = [s for s in statements if not s.lstrip().upper().startswith(("SELECT", "PRAGMA"))]
    assert writes == []
    assert not any("pg_advisory" in statement for statement in statements), "took the lock at head"
    assert run(url, "SELECT name FROM api_keys") == [("a",)]
    assert run(url, "SELECT version_num FROM alembic_version") == [(head(),)]


def test_worker_processes_upgrading_together_all_succeed(new_database: NewDatabase) -> None:
    url = new_database()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # all at once: each upgrade now starts within a few milliseconds
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [worker.communicate(timeout=120) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    failures = [err for worker, (_, err) in zip(workers, results, strict=True) if worker.returncode != 0]
    assert failures == []
    assert tables(url) >= SERVING_TABLES | {"alembic_version"}
    assert run(url, "SELECT version_num FROM alembic_version") == [(head(),)]


def test_threads_upgrading_different_databases_together_all_succeed(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path / f'db{i}.sqlite'}" for i in range(8)]
    with ThreadPoolExecutor(len(urls)) as pool:
        list(pool.map(upgrade, urls))
    for url in urls:
        assert tables(url) >= SERVING_TABLES | {"alembic_version"}
        assert current(url) == head()


def test_the_serving_code_migrates_the_whole_database(new_database: NewDatabase) -> None:
    keys_first, log_first = new_database(), new_database()
    KeyStore(keys_first).close()
    log = PredictionLog(log_first)
    log.start()
    log.close()

    for url in (keys_first, log_first):
        assert tables(url) >= SERVING_TABLES | {"alembic_version"}
        assert current(url) == head()


def test_a_log_table_of_another_name_is_created_without_migrating(new_database: NewDatabase) -> None:
    url = new_database()
    log = PredictionLog(url, table="other_predictions")
    log.start()
    log.close()
    assert tables(url) == {"other_predictions"}


def test_a_database_from_a_newer_release_is_refused_in_one_line(new_database: NewDatabase) -> None:
    url = new_database()
    upgrade(url)
    run(url, "UPDATE alembic_version SET version_num = '9999'")

    with pytest.raises(MigrationError, match="9999") as raised:
        upgrade(url)
    with pytest.raises(KeyStoreError, match="9999") as keys_raised:
        KeyStore(url)
    with pytest.raises(PredictionLogError, match=r"prediction log table: .*9999") as log_raised:
        PredictionLog(url).start()
    for error in (raised.value, keys_raised.value, log_raised.value):
        assert "\n" not in str(error)


def test_the_head_read_from_the_revision_files_is_alembic_s() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(Path(migrations.__file__).parent))
    assert head() == scripts.get_current_head(), f"alembic {importlib.metadata.version('alembic')}"
