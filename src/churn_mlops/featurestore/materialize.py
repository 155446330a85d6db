"""The materialize job: a lake version's newest snapshot of each customer into the online store."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from churn_mlops.data.lake import LakeVersion
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import SourceError, first_line
from churn_mlops.featurestore.config import REGISTRY_DB
from churn_mlops.featurestore.layout import FEATURE_VIEW, ONLINE_DB, lookup_index_sql
from churn_mlops.featurestore.repo import apply, feast_errors, open_store, quiet
from churn_mlops.featurestore.staging import event_time_field, stage
from churn_mlops.settings import Settings

logger = logging.getLogger(__name__)
Step = Callable[[str], None]


@dataclass(frozen=True)
class Applied:
    """The definitions registered, and the lake version the view reads."""

    project: str
    feature_view: str
    features: int
    lake_version: str
    source: str
    online_store: str
    registry: str

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary."""
        return asdict(self)


@dataclass(frozen=True)
class Materialized(Applied):
    """What a materialization loaded: customers, snapshots considered, and the time window."""

    customers: int = 0
    snapshots: int = 0
    start: str = ""
    end: str = ""


def apply_version(settings: Settings, spec: DatasetSpec, version: LakeVersion) -> Applied:
    """Stage a lake version as the `customers` source and register the definitions (idempotent)."""
    store = open_store(settings)
    source = stage(version, spec, settings.feature_repo_dir)
    apply(store, spec, source, settings.feature_store.ttl_days)
    return _applied(settings, spec, version, str(source))


def materialize(
    settings: Settings,
    spec: DatasetSpec,
    version: LakeVersion,
    *,
    until: datetime | None = None,
    step: Step = lambda _: None,
) -> Materialized:
    """Load each customer's newest snapshot up to `until` (default now) into the online store."""
    end = until or datetime.now(UTC)
    step(f"staging lake version {version.manifest.version}")
    store = open_store(settings)
    source = stage(version, spec, settings.feature_repo_dir)
    step("applying the feature definitions")
    apply(store, spec, source, settings.feature_store.ttl_days)
    _prepare_sqlite_store(settings)
    field = event_time_field(spec)
    times = pl.read_parquet(source, columns=[spec.id.name, field]).filter(pl.col(field) <= end)
    described = asdict(_applied(settings, spec, version, str(source)))
    if times.height == 0:
        logger.warning("lake version %s has no snapshot at or before %s", version.manifest.version, end)
        return Materialized(**described, end=end.isoformat())
    start: datetime = times.select(pl.col(field).min()).item() - timedelta(seconds=1)
    step(f"materializing {times.get_column(spec.id.name).n_unique()} customers")
    with feast_errors("materialize into the online store"), quiet():
        store.materialize(start, end, feature_views=[FEATURE_VIEW])
    return Materialized(
        **described,
        customers=times.get_column(spec.id.name).n_unique(),
        snapshots=times.height,
        start=start.isoformat(),
        end=end.isoformat(),
    )


def _prepare_sqlite_store(settings: Settings) -> None:
    """Make the SQLite online store quick to read by customer (both changes stay):
    - WAL mode: a server's lookups read on while a materialization writes, instead of waiting;
    - the lookup index (`lookup_index_sql`), which Feast's writes keep up to date like its own."""
    path = settings.feature_repo_dir / ONLINE_DB
    if settings.feature_store.redis_url or not path.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(lookup_index_sql(settings.feature_store.project))
    except sqlite3.Error as exc:
        raise SourceError(f"cannot prepare the online store {path}: {first_line(exc)}") from exc


def _applied(settings: Settings, spec: DatasetSpec, version: LakeVersion, source: str) -> Applied:
    fs, directory = settings.feature_store, settings.feature_repo_dir
    return Applied(
        project=fs.project,
        feature_view=FEATURE_VIEW,
        features=len(spec.features),
        lake_version=version.manifest.version,
        source=source,
        online_store="redis" if fs.redis_url else str(directory / ONLINE_DB),
        registry="sql" if fs.registry_url else str(directory / REGISTRY_DB),
    )
