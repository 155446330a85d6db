"""Served-traffic counts: added up across workers, kept through a database failure, flushed at stop."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from churn_mlops import migrations
from churn_mlops.serving.app import create_app
from churn_mlops.serving.keys import KeyStore
from churn_mlops.serving.traffic import TrafficRecorder, add_counts, bucket_of, traffic
from churn_mlops.settings import ServingSettings, Settings
from churn_mlops.sql import create_engine
from tests.integration.serving_fixtures import TrainedHome

Row = tuple[str, str, int, int, int]  # (day, route, status, bucket, requests)
A_DAY, A_DATE = 19_844, "2024-05-01"  # an epoch day, as the recorder keys counts


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated serving database: a SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'serving.db'}"
        migrations.upgrade(url)
        yield url
        return
    engine: sa.Engine = request.getfixturevalue("postgres_engine")
    schema = f"churn_traffic_{uuid.uuid4().hex[:10]}"
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = engine.url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )
    migrations.upgrade(url)
    yield url
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


def stored(url: str) -> list[Row]:
    """The serving_traffic table, in key order."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            t = traffic.c
            query = sa.select(t.day, t.route, t.status, t.bucket, t.requests).order_by(
                t.day, t.route, t.status, t.bucket
            )
            return [(r.day, r.route, r.status, r.bucket, r.requests) for r in connection.execute(query)]
    finally:
        engine.dispose()


def today() -> str:
    """Today's date (UTC), as the table stores it."""
    return time.strftime("%Y-%m-%d", time.gmtime())


def test_counts_add_up_in_their_rows(database_url: str) -> None:
    engine = create_engine(database_url)
    fast, slow = bucket_of(2.0), bucket_of(80.0)
    try:
        add_counts(engine, [((A_DAY, "/predict", 200, fast), 3), ((A_DAY, "/predict", 200, slow), 1)])
        add_counts(engine, [((A_DAY, "/predict", 200, fast), 4), ((A_DAY, "/predict/batch", 500, fast), 2)])
    finally:
        engine.dispose()
    assert stored(database_url) == [
        (A_DATE, "/predict", 200, fast, 7),
        (A_DATE, "/predict", 200, slow, 1),
        (A_DATE, "/predict/batch", 500, fast, 2),
    ]


async def _two_workers(url: str) -> None:
    first, second = TrafficRecorder(url), TrafficRecorder(url)
    first.start()
    second.start()
    for _ in range(3):
        first.count("/predict", 200, 0.002)
    for _ in range(2):
        second.count("/predict", 200, 0.002)
    second.count("/predict", 429, 0.0001)
    await first.stop()
    await second.stop()


def test_two_workers_counts_add_up(database_url: str) -> None:
    asyncio.run(_two_workers(database_url))
    assert stored(database_url) == [
        (today(), "/predict", 200, bucket_of(2.0), 5),
        (today(), "/predict", 429, bucket_of(0.1), 1),
    ]


async def _count_every_route(url: str) -> None:
    recorder = TrafficRecorder(url)
    recorder.start()
    for route in ("/predict", "/predict/batch", "/health/ready", "/dashboard/data", "/metrics", "unmatched"):
        recorder.count(route, 200, 0.002)
    await recorder.stop()


def test_only_the_prediction_routes_are_counted(database_url: str) -> None:
    asyncio.run(_count_every_route(database_url))
    assert [(route, requests) for _, route, _, _, requests in stored(database_url)] == [
        ("/predict", 1),
        ("/predict/batch", 1),
    ]


async def _flush_through_a_locked_database(url: str, lock: sa.Engine) -> list[Row]:
    recorder = TrafficRecorder(url, timeout=0.2)
    recorder.start()
    recorder.count("/predict", 200, 0.002)
    with lock.connect() as holder:
        holder.exec_driver_sql("BEGIN EXCLUSIVE")  # another writer holds the database
        await recorder.flush()
        holder.exec_driver_sql("ROLLBACK")
    during = stored(url)
    recorder.count("/predict", 200, 0.002)
    await recorder.stop()
    return during


def test_counts_survive_a_failed_flush_and_are_written_by_the_next(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serving.db'}"
    migrations.upgrade(url)
    lock = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        during = asyncio.run(_flush_through_a_locked_database(url, lock))
    finally:
        lock.dispose()
    assert during == []
    assert stored(url) == [(today(), "/predict", 200, bucket_of(2.0), 2)]


@pytest.mark.slow
def test_the_server_stores_its_prediction_traffic_when_it_stops(
    trained_home: TrainedHome, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'serving.db'}"
    keys = KeyStore(url)
    predict_key, _ = keys.create("client", ["predict"])
    keys.close()
    settings = Settings(home=trained_home.home, serving=ServingSettings(database_url=url))
    customer = trained_home.customers[0]
    with TestClient(create_app(settings)) as client:
        for _ in range(5):
            response = client.post("/predict", json=customer, headers={"X-API-Key": predict_key})
            assert response.status_code == 200, response.text
        assert client.post("/predict", json=customer).status_code == 401
        assert client.get("/health/live").status_code == 200
    by_status: dict[tuple[str, str, int], int] = {}
    for day, route, status, _, requests in stored(url):
        by_status[day, route, status] = by_status.get((day, route, status), 0) + requests
    assert by_status == {(today(), "/predict", 200): 5, (today(), "/predict", 401): 1}
