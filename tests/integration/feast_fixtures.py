"""A Feast online store written by Feast itself, per the feature store's layout, for the tests."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import prometheus_client  # noqa: F401  (before Feast: its values stay in this process)

from churn_mlops.data.spec import DatasetSpec, Kind

STALE = "stale-customer"  # observed 400 days ago: over the default ttl_days of 365
STALE_DAYS = 400
PROMETHEUS_KEYS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def import_feast() -> None:
    """Import Feast, then undo what its import does to the environment: it sets the Prometheus
    multiprocess directory, which would switch every later server of this test process to
    multiprocess metrics (and their /metrics would lose the server's own counters)."""
    saved = {key: os.environ.get(key) for key in PROMETHEUS_KEYS}
    import feast  # noqa: F401

    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


import_feast()


def feast_store(repo: Path, project: str, spec: DatasetSpec, redis_url: str | None = None) -> Any:
    """A Feast FeatureStore with the contract's entity and `customers` view, applied."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.repo_config import RepoConfig
    from feast.types import Bool, Float64, String

    repo.mkdir(parents=True, exist_ok=True)
    online: dict[str, Any] = {"type": "sqlite", "path": str(repo / "online.db")}
    if redis_url is not None:
        online = {"type": "redis", "connection_string": "127.0.0.1:6379,db=0"}
    config = RepoConfig(
        project=project,
        provider="local",
        registry=str(repo / "registry.db"),
        online_store=online,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=repo,
    )
    store = FeatureStore(config=config)
    dtypes = {Kind.NUMERIC: Float64, Kind.BOOLEAN: Bool, Kind.CATEGORICAL: String}
    entity = Entity(name=spec.id.name, join_keys=[spec.id.name], value_type=ValueType.STRING)
    source = FileSource(path=str(repo / "customers.parquet"), timestamp_field="event_timestamp")
    view = FeatureView(
        name="customers",
        entities=[entity],
        ttl=timedelta(days=365),
        schema=[Field(name=column.name, dtype=dtypes[column.type]) for column in spec.features],
        source=source,
        online=True,
    )
    store.apply([entity, view])
    return store


def write_customers(store: Any, customers: list[dict[str, Any]], spec: DatasetSpec) -> None:
    """Write customers to the online store, one observed STALE_DAYS ago, the others an hour ago."""
    now = datetime.now(UTC)
    rows = [
        {
            **c,
            "event_timestamp": now
            - (timedelta(days=STALE_DAYS) if c[spec.id.name] == STALE else timedelta(hours=1)),
        }
        for c in customers
    ]
    frame = pl.DataFrame(rows).with_columns(
        pl.col(c.name).cast(pl.Float64) for c in spec.features if c.type is Kind.NUMERIC
    )
    store.write_to_online_store("customers", frame.to_pandas())


def feast_view(store: Any, ids: list[str], spec: DatasetSpec) -> list[dict[str, Any]]:
    """What Feast's own get_online_features returns for ids: values and each one's event time."""
    refs = [f"customers:{column.name}" for column in spec.features]
    found = store.get_online_features(features=refs, entity_rows=[{spec.id.name: i} for i in ids])
    table = found.to_dict(include_event_timestamps=True)
    return [{name: values[row] for name, values in table.items()} for row in range(len(ids))]
