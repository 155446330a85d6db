"""Online features by customer id: a Feast online store built by Feast, read by the model server.

Each test's store is written by Feast itself (entity and `customers` view applied per the feature
store's layout, then `write_to_online_store`); the server reads it without Feast. An answer by id
must equal, to the last digit that matters, the answer to the same customer sent in full.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
from fastapi.testclient import TestClient

from churn_mlops.data.spec import DatasetSpec, load_spec
from churn_mlops.serving.app import create_app
from churn_mlops.serving.online.errors import FeatureStoreError
from churn_mlops.serving.online.redis_store import RedisOnlineStore
from churn_mlops.serving.online.sqlite import INLINE_KEYS, SqliteOnlineStore
from churn_mlops.serving.predlog import PredictionLog
from churn_mlops.settings import FeatureStoreSettings, ServingSettings, Settings
from tests.integration.feast_fixtures import STALE, STALE_DAYS, feast_store, feast_view, write_customers
from tests.integration.predlog_rows import logged
from tests.integration.serving_fixtures import TrainedHome

pytestmark = pytest.mark.slow
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_spec()


@pytest.fixture(scope="module")
def online(
    trained_home: TrainedHome, tmp_path_factory: pytest.TempPathFactory, spec: DatasetSpec
) -> tuple[TrainedHome, Any]:
    """A copy of the trained home whose SQLite online store Feast wrote, and that FeatureStore."""
    home = tmp_path_factory.mktemp("online") / "churn-home"
    shutil.copytree(trained_home.home, home)
    customers = [*trained_home.customers, trained_home.customers[0] | {spec.id.name: STALE}]
    store = feast_store(home / "features", "churn", spec)
    write_customers(store, customers, spec)
    return TrainedHome(home, trained_home.predict_key, trained_home.admin_key, customers), store


@pytest.fixture(scope="module")
def stored(online: tuple[TrainedHome, Any], spec: DatasetSpec) -> dict[str, dict[str, Any]]:
    """Each fresh customer's fields as Feast returns them, by id (the full body to compare with)."""
    home, store = online
    ids = [str(c[spec.id.name]) for c in home.customers if c[spec.id.name] != STALE]
    views = feast_view(store, ids, spec)
    return {i: {c.name: view[c.name] for c in spec.features} for i, view in zip(ids, views, strict=True)}


def _settings(home: Path, timeout: float = 5.0, **feature_store: Any) -> Settings:
    return Settings(
        home=home,
        serving=ServingSettings(rate_per_second=1000, burst=1000, database_timeout_seconds=timeout),
        feature_store=FeatureStoreSettings(**feature_store),
    )


@pytest.fixture
def client(online: tuple[TrainedHome, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(online[0].home))) as test_client:
        yield test_client


def _post(client: TestClient, home: TrainedHome, body: Any, path: str = "/predict", **kwargs: Any) -> Any:
    return client.post(path, json=body, headers={"X-API-Key": home.predict_key}, **kwargs)


def test_the_reader_decodes_what_feast_reads(online: tuple[TrainedHome, Any], spec: DatasetSpec) -> None:
    """Values and event times read straight from the table equal Feast's get_online_features."""
    import asyncio

    home, store = online
    ids = [str(c[spec.id.name]) for c in home.customers] + ["no-such-customer"]
    features = [c.name for c in spec.features]
    reader = SqliteOnlineStore(home.home / "features" / "online.db", "churn", spec.id.name, features)

    async def read() -> list[Any]:
        await reader.start()
        try:  # a few customers are read on the event loop, a batch of many from a thread
            few = [found for i in range(0, len(ids), 3) for found in await reader.read(ids[i : i + 3])]
            assert few == await reader.read(ids)
            return few
        finally:
            await reader.close()

    found = asyncio.run(read())
    assert len(ids) > INLINE_KEYS
    assert found[-1] is None
    for view, ours in zip(feast_view(store, ids[:-1], spec), found[:-1], strict=True):
        assert ours is not None
        assert ours.values == {name: view[name] for name in features}
        assert int(ours.as_of.timestamp()) == view[f"{features[0]}__ts"]


def test_by_id_answers_as_the_stored_fields_sent_in_full(
    client: TestClient, online: tuple[TrainedHome, Any], stored: dict[str, dict[str, Any]]
) -> None:
    home = online[0]
    for customer_id, fields in list(stored.items())[:8]:
        by_id = _post(client, home, {"customer_id": customer_id})
        full = _post(client, home, {"customer_id": customer_id, **fields})
        assert by_id.status_code == 200, by_id.text
        assert abs(by_id.json()["churn_probability"] - full.json()["churn_probability"]) <= TOLERANCE
        assert by_id.json()["prediction"] == full.json()["prediction"]
        assert by_id.json()["customer_id"] == customer_id
        assert by_id.json()["features"]["stale"] is False
        assert "features" not in full.json()  # sent in full: nothing was looked up


def test_fields_sent_with_an_id_override_the_stored_ones(
    client: TestClient, online: tuple[TrainedHome, Any], stored: dict[str, dict[str, Any]]
) -> None:
    home = online[0]
    customer_id, fields = next(iter(stored.items()))
    override = {"tenure": 71, "contract": "Two year", "monthly_charges": 19.5}
    merged = _post(client, home, {"customer_id": customer_id, **override})
    full = _post(client, home, {"customer_id": customer_id, **fields, **override})
    plain = _post(client, home, {"customer_id": customer_id})
    assert merged.status_code == 200, merged.text
    assert abs(merged.json()["churn_probability"] - full.json()["churn_probability"]) <= TOLERANCE
    assert merged.json()["churn_probability"] != plain.json()["churn_probability"]


def test_the_log_and_explanations_see_the_merged_record(
    client: TestClient, online: tuple[TrainedHome, Any], stored: dict[str, dict[str, Any]], spec: DatasetSpec
) -> None:
    """The prediction log (and so the monitoring profiles) and the reasons see what a full post would."""
    home = online[0]
    customer_id, fields = list(stored.items())[1]
    request_id = f"by-id-{uuid.uuid4().hex[:8]}"
    sent = {"customer_id": customer_id, "tenure": 5}
    by_id = client.post(
        "/predict",
        json=sent,
        params={"explain": "true"},
        headers={"X-API-Key": home.predict_key, "X-Request-ID": request_id},
    )
    full = _post(
        client, home, {"customer_id": customer_id, **fields, "tenure": 5}, params={"explain": "true"}
    )
    assert by_id.json()["reasons"] == full.json()["reasons"]
    rows = logged(PredictionLog(f"sqlite:///{home.home / 'serving.db'}"))
    inputs = json.loads(rows.filter(pl.col("request_id") == request_id).get_column("inputs")[0])
    expected = {"customer_id": customer_id, **fields, "tenure": 5}
    integers = {c.name for c in spec.features if c.integer}
    assert inputs == {k: int(v) if k in integers and v is not None else v for k, v in expected.items()}


def test_the_model_route_describes_both_request_shapes(
    client: TestClient, online: tuple[TrainedHome, Any]
) -> None:
    answer = client.get("/model", headers={"X-API-Key": online[0].predict_key})
    assert answer.status_code == 200, answer.text
    full, by_id = answer.json()["request_schema"]["anyOf"]
    assert by_id["required"] == ["customer_id"]
    assert "tenure" in full["required"]


def test_an_unknown_id_is_a_404_naming_it(client: TestClient, online: tuple[TrainedHome, Any]) -> None:
    answer = _post(client, online[0], {"customer_id": "nobody-1234", "tenure": 3})
    assert answer.status_code == 404, answer.text
    assert "nobody-1234" in answer.json()["detail"]
    assert answer.json()["customer_ids"] == ["nobody-1234"]


def test_an_unknown_id_sent_with_every_field_is_scored_as_sent(
    client: TestClient, online: tuple[TrainedHome, Any], stored: dict[str, dict[str, Any]]
) -> None:
    fields = next(iter(stored.values()))
    answer = _post(client, online[0], {"customer_id": "walk-in", **fields})
    assert answer.status_code == 200, answer.text
    assert "features" not in answer.json()


def test_stale_features_are_a_409_naming_their_age(
    client: TestClient, online: tuple[TrainedHome, Any]
) -> None:
    answer = _post(client, online[0], {"customer_id": STALE})
    assert answer.status_code == 409, answer.text
    assert STALE in answer.json()["detail"]
    assert f"{STALE_DAYS}.0 days old" in answer.json()["detail"]
    assert answer.json()["customer_ids"] == [STALE]


def test_stale_features_are_flagged_when_so_configured(online: tuple[TrainedHome, Any]) -> None:
    home = online[0]
    with TestClient(create_app(_settings(home.home, stale="flag"))) as client:
        answer = _post(client, home, {"customer_id": STALE})
    assert answer.status_code == 200, answer.text
    features = answer.json()["features"]
    assert features["stale"] is True
    assert round(features["age_days"]) == STALE_DAYS
    assert datetime.fromisoformat(features["as_of"]) < datetime.now(UTC) - timedelta(days=STALE_DAYS - 1)


def test_a_longer_ttl_makes_old_features_fresh(online: tuple[TrainedHome, Any]) -> None:
    home = online[0]
    with TestClient(create_app(_settings(home.home, ttl_days=STALE_DAYS + 1))) as client:
        answer = _post(client, home, {"customer_id": STALE})
    assert answer.status_code == 200, answer.text
    assert answer.json()["features"]["stale"] is False


def test_a_batch_decides_per_customer(
    client: TestClient, online: tuple[TrainedHome, Any], stored: dict[str, dict[str, Any]]
) -> None:
    home = online[0]
    (first, first_fields), (second, second_fields), (third, third_fields) = list(stored.items())[:3]
    body = [
        {"customer_id": first},
        {"customer_id": second, **second_fields},
        {"customer_id": third, "tenure": 2},
    ]
    full = [
        {"customer_id": first, **first_fields},
        {"customer_id": second, **second_fields},
        {"customer_id": third, **third_fields, "tenure": 2},
    ]
    by_id = _post(client, home, body, "/predict/batch")
    expected = _post(client, home, full, "/predict/batch")
    assert by_id.status_code == 200, by_id.text
    got = [p["churn_probability"] for p in by_id.json()["predictions"]]
    want = [p["churn_probability"] for p in expected.json()["predictions"]]
    assert all(abs(g - w) <= TOLERANCE for g, w in zip(got, want, strict=True))
    assert ["features" in p for p in by_id.json()["predictions"]] == [True, False, True]


def test_a_large_batch_by_id_answers_as_sent_in_full(
    client: TestClient, online: tuple[TrainedHome, Any], stored: dict[str, dict[str, Any]]
) -> None:
    by_id = _post(client, online[0], [{"customer_id": i} for i in stored], "/predict/batch")
    full = _post(client, online[0], [{"customer_id": i, **f} for i, f in stored.items()], "/predict/batch")
    assert by_id.status_code == 200, by_id.text
    assert len(stored) > INLINE_KEYS
    got = [p["churn_probability"] for p in by_id.json()["predictions"]]
    want = [p["churn_probability"] for p in full.json()["predictions"]]
    assert all(abs(g - w) <= TOLERANCE for g, w in zip(got, want, strict=True))


def test_a_batch_names_every_unknown_id(
    client: TestClient, online: tuple[TrainedHome, Any], stored: dict[str, dict[str, Any]]
) -> None:
    known = next(iter(stored))
    body = [{"customer_id": "ghost-1"}, {"customer_id": known}, {"customer_id": "ghost-2", "tenure": 4}]
    answer = _post(client, online[0], body, "/predict/batch")
    assert answer.status_code == 404, answer.text
    assert answer.json()["customer_ids"] == ["ghost-1", "ghost-2"]
    assert "ghost-1" in answer.json()["detail"]
    assert "ghost-2" in answer.json()["detail"]


def test_missing_fields_without_an_id_are_a_422_naming_them(
    client: TestClient, online: tuple[TrainedHome, Any]
) -> None:
    answer = _post(client, online[0], [{"customer_id": "x", "tenure": 3}, {"tenure": 3}], "/predict/batch")
    assert answer.status_code == 422, answer.text
    fields = {e["field"] for e in answer.json()["errors"]}
    assert {"1.gender", "1.monthly_charges"} <= fields
    assert not any(field.startswith("0.") for field in fields)


def test_without_a_feature_store_an_id_alone_is_a_422_naming_the_missing_fields(
    trained_home: TrainedHome,
) -> None:
    """The session's home has no online store: the request model requires every field, as ever,
    and a customer sent by id is told why and what to run."""
    customer_id = trained_home.customers[0]["customer_id"]
    with TestClient(create_app(_settings(trained_home.home))) as client:
        answer = _post(client, trained_home, {"customer_id": customer_id})
        batch = _post(
            client, trained_home, [trained_home.customers[1], {"customer_id": customer_id}], "/predict/batch"
        )
    assert answer.status_code == 422, answer.text
    missing = {e["field"] for e in answer.json()["errors"] if e["problem"] == "Field required"}
    assert {"tenure", "gender", "monthly_charges", "contract"} <= missing
    for refused in (answer, batch):
        assert refused.status_code == 422, refused.text
        assert "no online feature store" in refused.json()["detail"]
        assert "churn features materialize" in refused.json()["detail"]


def test_without_a_feature_store_a_full_customer_missing_a_field_is_not_told_about_the_store(
    trained_home: TrainedHome,
) -> None:
    customer = dict(trained_home.customers[0])
    del customer["tenure"]
    with TestClient(create_app(_settings(trained_home.home))) as client:
        answer = _post(client, trained_home, customer)
        batch = _post(client, trained_home, [customer, {"tenure": 3}], "/predict/batch")
    for refused in (answer, batch):
        assert refused.status_code == 422, refused.text
        assert "feature store" not in refused.json()["detail"]
    assert answer.json()["detail"] == "tenure: Field required"


def test_a_lookup_waits_out_a_materialization_holding_the_file(
    online: tuple[TrainedHome, Any], stored: dict[str, dict[str, Any]]
) -> None:
    """While a writer holds the online store's file exclusively, a lookup waits (off the event
    loop) for it, up to the serving database timeout, then answers 503 naming the store."""
    home = online[0]
    customer_id = next(iter(stored))
    settings = _settings(home.home, timeout=1.0)
    writer = sqlite3.connect(
        home.home / "features" / "online.db", isolation_level=None, check_same_thread=False
    )
    with TestClient(create_app(settings)) as client:
        writer.execute("BEGIN EXCLUSIVE")
        release = threading.Timer(0.3, writer.execute, ["COMMIT"])
        release.start()
        waited = _post(client, home, {"customer_id": customer_id})
        release.join()
        writer.execute("BEGIN EXCLUSIVE")
        try:
            refused = _post(client, home, {"customer_id": customer_id})
            full = _post(client, home, {"customer_id": customer_id, **stored[customer_id]})
        finally:
            writer.execute("COMMIT")
            writer.close()
    assert waited.status_code == 200, waited.text
    assert refused.status_code == 503, refused.text
    assert refused.json() == {"detail": "the online feature store is unavailable; try again"}
    assert full.status_code == 200, full.text  # sent in full: the store is not asked


def test_readiness_reports_an_online_store_that_cannot_be_read(
    tmp_path: Path, online: tuple[TrainedHome, Any], stored: dict[str, dict[str, Any]]
) -> None:
    """/health/ready checks the online store beside the other dependencies: a store whose table
    is gone makes the server not ready, while customers sent in full are still answered."""
    home = tmp_path / "churn-home"
    shutil.copytree(online[0].home, home)
    customer_id = next(iter(stored))
    settings = Settings(
        home=home, serving=ServingSettings(rate_per_second=1000, burst=1000, ready_cache_seconds=0.0)
    )
    with TestClient(create_app(settings)) as client:
        ready = client.get("/health/ready")
        with contextlib.closing(sqlite3.connect(home / "features" / "online.db")) as writer:
            writer.execute('DROP TABLE "churn_customers"')
            writer.commit()
        not_ready = client.get("/health/ready")
        full = _post(client, online[0], {"customer_id": customer_id, **stored[customer_id]})
    assert ready.status_code == 200, ready.text
    assert not_ready.status_code == 503
    assert not_ready.json()["detail"] == "online feature store unavailable"
    assert full.status_code == 200, full.text


def test_an_online_store_without_its_table_stops_the_start_naming_it(
    tmp_path: Path, trained_home: TrainedHome
) -> None:
    home = tmp_path / "churn-home"
    shutil.copytree(trained_home.home, home)
    (home / "features").mkdir(exist_ok=True)
    sqlite3.connect(home / "features" / "online.db").close()
    app = create_app(_settings(home))
    with (
        pytest.raises(FeatureStoreError, match=r"churn_customers.*churn features materialize"),
        TestClient(app),
    ):
        pass


def test_after_the_materialize_job_customers_are_answered_by_id(
    tmp_path: Path, trained_home: TrainedHome, spec: DatasetSpec
) -> None:
    """The jobs' side and the server's side of the store agree: what `materialize` loads from the
    lake is what a request by id is scored on, and the server's lookup reads the index the job
    added, never the table itself."""
    from churn_mlops.data.lake import Lake
    from churn_mlops.featurestore.materialize import materialize

    home = tmp_path / "churn-home"
    shutil.copytree(trained_home.home, home)
    settings = _settings(home)
    materialize(settings, spec, Lake(settings.lake_dir).get("latest"))
    path = home / "features" / "online.db"
    query = SqliteOnlineStore(path, "churn", spec.id.name, []).query
    with contextlib.closing(sqlite3.connect(path)) as connection:
        plan = " ".join(row[-1] for row in connection.execute(f"EXPLAIN QUERY PLAN {query}", (b"",)))
    assert "USING COVERING INDEX churn_customers_lookup" in plan, plan
    customer = trained_home.customers[2]
    with TestClient(create_app(settings)) as client:
        by_id = _post(client, trained_home, {"customer_id": customer["customer_id"]})
        full = _post(client, trained_home, customer)
    assert by_id.status_code == 200, by_id.text
    assert abs(by_id.json()["churn_probability"] - full.json()["churn_probability"]) <= TOLERANCE


# ---- Redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_online(
    online: tuple[TrainedHome, Any],
    redis_url: str,
    spec: DatasetSpec,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Any]]:
    """A Feast Redis online store under a project of its own (its keys deleted afterwards)."""
    project = f"churntest{uuid.uuid4().hex[:8]}"
    store = feast_store(tmp_path_factory.mktemp("redis-repo"), project, spec, redis_url)
    try:
        write_customers(store, online[0].customers, spec)
        yield project, store
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=b"*" + project.encode()))
        if keys:
            client.delete(*keys)
        client.close()


def test_the_redis_reader_decodes_what_feast_reads(
    online: tuple[TrainedHome, Any], redis_online: tuple[str, Any], redis_url: str, spec: DatasetSpec
) -> None:
    import asyncio

    project, store = redis_online
    ids = [str(c[spec.id.name]) for c in online[0].customers[:5]] + ["no-such-customer"]
    features = [c.name for c in spec.features]
    reader = RedisOnlineStore(redis_url, project, spec.id.name, features)

    async def read() -> list[Any]:
        await reader.start()
        try:
            return [*await reader.read(ids), *await reader.read(ids[:1])]
        finally:
            await reader.close()

    found = asyncio.run(read())
    assert found[len(ids) - 1] is None
    assert found[-1] == found[0]
    for view, ours in zip(feast_view(store, ids[:-1], spec), found, strict=False):
        assert ours is not None
        assert ours.values == {name: view[name] for name in features}
        assert int(ours.as_of.timestamp()) == view[f"{features[0]}__ts"]


def test_by_id_through_a_redis_online_store(
    online: tuple[TrainedHome, Any],
    redis_online: tuple[str, Any],
    redis_url: str,
    stored: dict[str, dict[str, Any]],
) -> None:
    home = online[0]
    project, _ = redis_online
    settings = _settings(home.home, redis_url=redis_url, project=project)
    customer_id, fields = next(iter(stored.items()))
    with TestClient(create_app(settings)) as client:
        by_id = _post(client, home, {"customer_id": customer_id})
        full = _post(client, home, {"customer_id": customer_id, **fields})
        unknown = _post(client, home, {"customer_id": "nobody"})
        stale = _post(client, home, {"customer_id": STALE})
    assert by_id.status_code == 200, by_id.text
    assert abs(by_id.json()["churn_probability"] - full.json()["churn_probability"]) <= TOLERANCE
    assert unknown.status_code == 404
    assert stale.status_code == 409
