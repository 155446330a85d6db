"""The feature store as a user drives it: ingest history, materialize, look up, train point-in-time.

A small hand-made history makes every expectation exact: each customer is on a month-to-month
contract with tenure 10 on 1 January, the label is observed on 15 January, and on 20 January
they move to a two-year contract with tenure 11. The point-in-time training set must hold the
old contract; the online store, the new one.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import redis

from churn_mlops.data.lake import Lake
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import DataValidationError
from churn_mlops.featurestore.config import redis_connection_string, repo_options
from churn_mlops.featurestore.layout import ONLINE_DB
from churn_mlops.featurestore.materialize import apply_version, materialize
from churn_mlops.featurestore.repo import open_store
from churn_mlops.featurestore.training import training_set
from churn_mlops.settings import Settings, get_settings
from tests.commands import churn
from tests.conftest import POSTGRES_URL
from tests.factories import raw_customers, with_value

BEFORE, LABEL, AFTER, LATE = (
    "2026-01-01T08:00:00Z",
    "2026-01-15T23:59:59Z",
    "2026-01-20T08:00:00Z",
    "2026-01-25",
)
FEATURES = ["customers:contract", "customers:tenure", "customers:total_charges", "customers:partner"]


def _history(customers: int = 40) -> pl.DataFrame:
    """Two snapshots per customer around one label; the last five labels come after both snapshots."""
    base = raw_customers(customers, seed=11).with_columns(
        pl.lit(LABEL).alias("churn_observed_at"), pl.lit("Month-to-month").alias("Contract")
    )
    for row in range(customers - 5, customers):
        base = with_value(base, row, "churn_observed_at", LATE)
    before = base.with_columns(pl.lit(BEFORE).alias("snapshot_at"), pl.lit("10").alias("tenure"))
    after = base.with_columns(
        pl.lit(AFTER).alias("snapshot_at"), pl.lit("11").alias("tenure"), pl.lit("Two year").alias("Contract")
    )
    return pl.concat([before, after])


def _ingest(frame: pl.DataFrame, path: Path) -> str:
    frame.write_csv(path)
    return str(json.loads(churn("data", "ingest", "--source", str(path), "--json"))["lake_version"])


@pytest.fixture
def history_home(churn_home: Path, tmp_path: Path) -> Path:
    """A home whose newest lake version is the small history."""
    _ingest(_history(), tmp_path / "history.csv")
    return churn_home


def _online(settings: Settings, ids: list[str]) -> dict[str, list[object]]:
    rows = [{"customer_id": i} for i in ids]
    return open_store(settings).get_online_features(features=FEATURES, entity_rows=rows).to_dict()


def test_ingest_keeps_every_snapshot_with_its_time(history_home: Path, spec: DatasetSpec) -> None:
    lake = Lake(get_settings().lake_dir)
    stored = lake.read(lake.get("latest"))
    assert stored.height == 80
    assert stored.columns[:2] == ["customer_id", "snapshot_at"]
    assert stored.get_column("snapshot_at").n_unique() == 2
    assert "churn_observed_at" in stored.columns


def test_the_training_set_takes_each_labels_features_as_of_its_time(
    history_home: Path, spec: DatasetSpec
) -> None:
    settings, lake = get_settings(), Lake(get_settings().lake_dir)
    version = lake.get("latest")
    built = training_set(settings, spec, version, lake.read(version), None)
    rows = {r["customer_id"]: r for r in built.frame.to_dicts()}
    assert len(rows) == 40
    early = [r for i, r in rows.items() if int(i.rsplit("-", 1)[1]) < 35]
    late = [r for i, r in rows.items() if int(i.rsplit("-", 1)[1]) >= 35]
    assert {(r["contract"], r["tenure"]) for r in early} == {("Month-to-month", 10)}, "a later change leaked"
    assert {(r["contract"], r["tenure"]) for r in late} == {("Two year", 11)}
    assert built.frame.columns == list(spec.columns)
    assert built.lineage["labels"] == "40"
    assert built.lineage["training_set"].startswith("feature store: 40 labels")

    cut = training_set(settings, spec, version, lake.read(version), datetime(2026, 1, 16, tzinfo=UTC))
    assert cut.frame.height == 35, "--as-of leaves out labels observed later"
    assert cut.lineage["features_as_of"] == "2026-01-16T00:00:00+00:00"


def test_a_label_before_any_snapshot_is_left_out_and_counted(
    churn_home: Path, tmp_path: Path, spec: DatasetSpec
) -> None:
    frame = with_value(_history(), 0, "churn_observed_at", "2025-12-01")
    frame = with_value(frame, 40, "churn_observed_at", "2025-12-01")  # the same customer's second row
    _ingest(frame, tmp_path / "early.csv")
    settings, lake = get_settings(), Lake(get_settings().lake_dir)
    version = lake.get("latest")
    built = training_set(settings, spec, version, lake.read(version), None)
    assert built.frame.height == 39
    assert built.lineage["labels_without_features"] == "1"


def test_two_outcomes_at_one_time_are_an_error_and_later_labels_are_more_rows(
    churn_home: Path, tmp_path: Path, spec: DatasetSpec
) -> None:
    settings, lake = get_settings(), Lake(get_settings().lake_dir)
    frame = _history()
    relabelled = with_value(frame, 40, "churn_observed_at", "2026-01-21")  # customer 0, second snapshot
    _ingest(relabelled, tmp_path / "relabelled.csv")
    version = lake.get("latest")
    built = training_set(settings, spec, version, lake.read(version), None)
    rows = built.frame.filter(pl.col("customer_id") == "S11-000000000")
    assert rows.get_column("contract").to_list() == ["Month-to-month", "Two year"], "one row per label"
    flipped = with_value(frame, 40, "Churn", "Yes" if frame.item(0, "Churn") == "No" else "No")
    _ingest(flipped, tmp_path / "flipped.csv")
    version = lake.get("latest")
    with pytest.raises(DataValidationError, match="customer 'S11-000000000' has two churn values"):
        training_set(settings, spec, version, lake.read(version), None)


def test_materialize_loads_each_customers_newest_snapshot(history_home: Path) -> None:
    loaded = json.loads(churn("features", "materialize", "--json"))
    assert loaded["customers"] == 40
    assert loaded["snapshots"] == 80
    settings = get_settings()
    assert Path(loaded["online_store"]) == settings.feature_repo_dir / ONLINE_DB
    values = _online(settings, ["S11-000000000", "S11-000000001", "nobody"])
    assert values["contract"] == ["Two year", "Two year", None]
    assert values["tenure"] == [11.0, 11.0, None]

    json.loads(churn("features", "materialize", "--until", "2026-01-10", "--json"))
    assert _online(settings, ["S11-000000000"])["contract"] == ["Month-to-month"], "--until: as of then"


def test_a_missing_value_is_stored_as_missing(churn_home: Path, tmp_path: Path) -> None:
    frame = with_value(_history(), 40, "TotalCharges", " ")
    _ingest(frame, tmp_path / "blank.csv")
    churn("features", "materialize", "--json")
    values = _online(get_settings(), ["S11-000000000", "S11-000000001"])
    assert values["total_charges"][0] is None
    assert isinstance(values["total_charges"][1], float)


def test_a_version_without_times_is_materialized_at_its_ingest_time(churn_home: Path, tmp_path: Path) -> None:
    _ingest(raw_customers(30, seed=5), tmp_path / "plain.csv")
    loaded = json.loads(churn("features", "materialize", "--json"))
    assert loaded["customers"] == 30
    created = Lake(get_settings().lake_dir).get("latest").manifest.created_at
    assert loaded["start"] < created <= loaded["end"]
    assert _online(get_settings(), ["S5-000000003"])["contract"][0] is not None


def test_apply_is_idempotent(history_home: Path, spec: DatasetSpec) -> None:
    settings = get_settings()
    version = Lake(settings.lake_dir).get("latest")
    first = apply_version(settings, spec, version)
    again = apply_version(settings, spec, version)
    assert first == again
    store = open_store(settings)
    assert [v.name for v in store.list_feature_views()] == ["customers"]
    assert [e.name for e in store.list_entities()] == ["customer_id"]
    view = store.get_feature_view("customers")
    assert {f.name: str(f.dtype) for f in view.features}["tenure"] == "Float64"
    assert len(view.features) == len(spec.features)


def test_without_the_features_extra_the_command_says_how_to_install_it(
    history_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "feast", None)
    message = churn("features", "materialize", code=2)
    assert "uv sync --extra features" in message
    assert "uv sync --extra features" in churn("train", "--features", "store", code=2)


def test_an_online_store_file_that_is_not_a_database_is_a_one_line_error(history_home: Path) -> None:
    online = get_settings().feature_repo_dir / ONLINE_DB
    online.parent.mkdir(parents=True, exist_ok=True)
    online.write_text("not a database\n" * 1_000)
    message = churn("features", "materialize", code=3)
    assert "cannot apply the feature definitions: file is not a database" in message
    assert "Traceback" not in message


def test_bad_dates_are_usage_errors(history_home: Path) -> None:
    assert "--until" in churn("features", "materialize", "--until", "soon", code=2)
    assert "--as-of needs --features store" in churn("train", "--as-of", "2026-01-01", code=2)


def test_a_postgresql_registry_uses_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURN_FEATURE_STORE__REGISTRY_URL", "postgresql://feast:pw@db:5432/churn")
    get_settings.cache_clear()
    registry = repo_options(get_settings())["registry"]
    get_settings.cache_clear()
    assert registry["registry_type"] == "sql"
    assert registry["path"] == "postgresql+psycopg://feast:pw@db:5432/churn"


def test_redis_urls_become_feast_connection_strings() -> None:
    assert redis_connection_string("redis://cache:6380/2") == "cache:6380,db=2"
    assert redis_connection_string("redis://127.0.0.1") == "127.0.0.1:6379,db=0"
    assert redis_connection_string("rediss://:s%40cret@r:6379/1") == "r:6379,db=1,password=s@cret,ssl=true"


@pytest.fixture
def redis_store(history_home: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings with Redis as the online store, under a project of their own, deleted afterwards."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
    project = f"t_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("CHURN_FEATURE_STORE__REDIS_URL", redis_url)
    monkeypatch.setenv("CHURN_FEATURE_STORE__PROJECT", project)
    get_settings.cache_clear()
    settings = get_settings()
    yield settings
    store = open_store(settings)
    store._get_provider().online_store.delete_entity_values(store.config, ["customer_id"])  # type: ignore[attr-defined]
    assert not list(client.scan_iter(f"*{project}".encode()))


def test_redis_as_the_online_store(redis_store: Settings, spec: DatasetSpec) -> None:
    version = Lake(redis_store.lake_dir).get("latest")
    loaded = materialize(redis_store, spec, version)
    assert loaded.online_store == "redis"
    assert not (redis_store.feature_repo_dir / ONLINE_DB).exists()
    values = _online(redis_store, ["S11-000000000", "S11-000000039"])
    assert values["contract"] == ["Two year", "Two year"]
    assert values["tenure"] == [11.0, 11.0]


def test_postgresql_as_the_registry(
    history_home: Path, spec: DatasetSpec, monkeypatch: pytest.MonkeyPatch, postgres_engine: object
) -> None:
    project = f"t_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("CHURN_FEATURE_STORE__REGISTRY_URL", POSTGRES_URL)
    monkeypatch.setenv("CHURN_FEATURE_STORE__PROJECT", project)
    get_settings.cache_clear()
    settings = get_settings()
    try:
        loaded = materialize(settings, spec, Lake(settings.lake_dir).get("latest"))
        assert loaded.registry == "sql"
        assert not (settings.feature_repo_dir / "registry.db").exists()
        assert _online(settings, ["S11-000000002"])["contract"] == ["Two year"]
        assert [v.name for v in open_store(settings).list_feature_views()] == ["customers"]
    finally:
        open_store(settings).registry.delete_project(project, commit=True)


@pytest.mark.slow
def test_train_from_the_store_records_the_point_in_time_join(churn_home: Path, tmp_path: Path) -> None:
    from churn_mlops.models.registry import Registry

    history = tmp_path / "history.parquet"
    churn("data", "generate", "-o", str(history), "--rows", "600", "--days", "60", "--end", "2026-03-01")
    churn("data", "ingest", "--source", str(history), "--json")
    lake = json.loads(churn("train", "--json"))
    assert (
        lake["training_set"] == f"lake: newest snapshot of each of 600 customers ({_rows(history)} snapshots)"
    )
    store = json.loads(churn("train", "--features", "store", "--as-of", "2026-02-15", "--json"))
    assert store["training_set"].startswith("feature store: ")
    assert "labels observed up to 2026-02-15T00:00:00+00:00" in store["training_set"]
    registry = Registry.from_settings(get_settings())
    version = registry.versions()[-1]
    assert version.tags["features_as_of"] == "2026-02-15T00:00:00+00:00"
    assert version.tags["feature_store"] == "churn/customers"
    observed = pl.read_parquet(history).filter(pl.col("churn_observed_at") <= "2026-02-15T00:00:00Z")
    assert version.tags["labels"] == str(observed.get_column("customerID").n_unique())
    run = registry.client.get_run(store["run_id"])
    assert run.data.tags["training_set"] == store["training_set"]


def _rows(path: Path) -> int:
    return pl.read_parquet(path).height
