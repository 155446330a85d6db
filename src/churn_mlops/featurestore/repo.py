"""The Feast repository: one entity (the customer id) and one feature view (`customers`), from the spec.

Definitions are built in code from the dataset spec and applied idempotently: applying the same
definitions again changes nothing, and re-pointing the view at another lake version is an update.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_mlops.data.spec import ColumnSpec, DatasetSpec, Kind
from churn_mlops.errors import SourceError, first_line
from churn_mlops.featurestore.config import repo_options, require_feast
from churn_mlops.featurestore.layout import FEATURE_VIEW
from churn_mlops.featurestore.staging import event_time_field
from churn_mlops.settings import Settings

if TYPE_CHECKING:
    from feast import Entity, FeatureStore, FeatureView

logger = logging.getLogger(__name__)


def open_store(settings: Settings) -> FeatureStore:
    """A Feast FeatureStore for these settings (the local folder is created for the embedded stores)."""
    require_feast()
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    settings.feature_repo_dir.mkdir(parents=True, exist_ok=True)
    with feast_errors("open the feature registry"):
        return FeatureStore(config=RepoConfig(**repo_options(settings)))


def entity(spec: DatasetSpec) -> Entity:
    """The customer entity: the spec's id, a string join key."""
    require_feast()
    from feast import Entity, ValueType

    return Entity(
        name=spec.id.name,
        join_keys=[spec.id.name],
        value_type=ValueType.STRING,
        description=f"a {spec.name} customer",
    )


def feature_view(spec: DatasetSpec, source: Path, ttl_days: float) -> FeatureView:
    """The `customers` view: every spec feature, read from a staged lake version."""
    require_feast()
    from feast import FeatureView, Field, FileSource

    file_source = FileSource(
        name=f"{spec.name}_{FEATURE_VIEW}", path=str(source), timestamp_field=event_time_field(spec)
    )
    return FeatureView(
        name=FEATURE_VIEW,
        entities=[entity(spec)],
        ttl=timedelta(days=ttl_days),
        schema=[Field(name=f.name, dtype=feast_type(f), description=f.description) for f in spec.features],
        source=file_source,
        online=True,
        tags={"spec": spec.name, "spec_digest": spec.digest(), "lake_file": source.name},
    )


def feast_type(column: ColumnSpec) -> Any:
    """The Feast type of a feature: numbers (integers too) Float64, flags Bool, categories String."""
    from feast.types import Bool, Float64, String

    return {Kind.NUMERIC: Float64, Kind.BOOLEAN: Bool, Kind.CATEGORICAL: String}[column.type]


def apply(store: FeatureStore, spec: DatasetSpec, source: Path, ttl_days: float) -> FeatureView:
    """Register the entity and the view over `source`; a no-op when they are already so."""
    view = feature_view(spec, source, ttl_days)
    with feast_errors("apply the feature definitions"), quiet():
        store.apply([entity(spec), view])
    return view


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep Feast's own progress lines off stdout (where the CLI's JSON goes); log them at debug."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        for line in filter(None, printed.getvalue().splitlines()):
            logger.debug("feast: %s", line)


@contextlib.contextmanager
def feast_errors(doing: str) -> Iterator[None]:
    """Translate an unreachable or unreadable store or registry into a SourceError naming what failed."""
    try:
        yield
    except (OSError, ConnectionError) as exc:
        raise SourceError(f"cannot {doing}: {first_line(exc)}") from exc
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in {"sqlalchemy", "sqlite3", "redis", "psycopg"}:
            raise
        raise SourceError(f"cannot {doing}: {first_line(exc)}") from exc
