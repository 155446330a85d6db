"""Online features by customer id: Feast's online store, read directly by the model server.

The server never imports Feast: it reads the SQLite table or the Redis hashes Feast writes
(`churn features materialize`) and decodes their bytes itself (see `codec`).
"""

from __future__ import annotations

from pathlib import Path

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.featurestore.layout import ONLINE_DB
from churn_mlops.serving.online.complete import Completed, Completer
from churn_mlops.serving.online.errors import FeatureStoreError, StaleFeaturesError, UnknownCustomerError
from churn_mlops.serving.online.redis_store import RedisOnlineStore
from churn_mlops.serving.online.sqlite import SqliteOnlineStore
from churn_mlops.serving.online.store import OnlineStore, Stored
from churn_mlops.settings import Settings

__all__ = [
    "Completed",
    "Completer",
    "FeatureStoreError",
    "OnlineStore",
    "StaleFeaturesError",
    "Stored",
    "UnknownCustomerError",
    "online_configured",
    "online_store",
    "sqlite_path",
]


def sqlite_path(settings: Settings) -> Path:
    """Where Feast's SQLite online store lives: CHURN_HOME/features/online.db."""
    return settings.feature_repo_dir / ONLINE_DB


def online_configured(settings: Settings) -> bool:
    """Whether customers can be looked up: a Redis online store, or the SQLite file exists."""
    return bool(settings.feature_store.redis_url) or sqlite_path(settings).is_file()


def online_store(settings: Settings, spec: DatasetSpec) -> OnlineStore | None:
    """The configured online store (not yet connected), or None when there is none."""
    if not online_configured(settings):
        return None
    store = settings.feature_store
    features = [column.name for column in spec.features]
    if store.redis_url:
        timeout = settings.serving.redis_timeout_seconds
        return RedisOnlineStore(store.redis_url, store.project, spec.id.name, features, timeout)
    timeout = settings.serving.database_timeout_seconds
    return SqliteOnlineStore(sqlite_path(settings), store.project, spec.id.name, features, timeout)
