"""The Feast repository configuration, built from settings in code: no feature_store.yaml to write."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from churn_mlops.errors import ConfigError
from churn_mlops.featurestore.layout import ONLINE_DB
from churn_mlops.settings import Settings
from churn_mlops.sql import database_url

REGISTRY_DB = "registry.db"
PROMETHEUS_KEYS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
ENTITY_KEY_SERIALIZATION_VERSION = 3  # Feast 0.67's default; the server's reader decodes the same


def repo_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of Feast's RepoConfig for these settings."""
    store, directory = settings.feature_store, settings.feature_repo_dir
    return {
        "project": store.project,
        "provider": "local",
        "registry": _registry(store.registry_url, directory),
        "online_store": _online(store.redis_url, directory),
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
        "repo_path": directory,
    }


def _registry(url: str | None, directory: Path) -> dict[str, Any]:
    if not url:
        return {"registry_type": "file", "path": str(directory / REGISTRY_DB), "cache_ttl_seconds": 0}
    return {
        "registry_type": "sql",
        "path": database_url(url).render_as_string(hide_password=False),
        "cache_ttl_seconds": 0,
        "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
    }


def _online(redis_url: str | None, directory: Path) -> dict[str, Any]:
    if not redis_url:
        return {"type": "sqlite", "path": str(directory / ONLINE_DB)}
    return {"type": "redis", "connection_string": redis_connection_string(redis_url)}


def redis_connection_string(url: str) -> str:
    """Feast's "host:port,db=N[,password=...][,ssl=true]" for a redis:// or rediss:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
        raise ConfigError("feature_store.redis_url: expected redis://host:port/db or rediss://...")
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise ConfigError(f"feature_store.redis_url: the database must be a number, not {path!r}")
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError("feature_store.redis_url: the port must be a number") from exc
    options = [f"{parts.hostname}:{port}", f"db={path}"]
    if parts.password:
        options.append(f"password={unquote(parts.password)}")
    if parts.username and parts.username != "default":
        options.append(f"username={unquote(parts.username)}")
    if parts.scheme == "rediss":
        options.append("ssl=true")
    return ",".join(options)


def require_feast() -> None:
    """Import Feast, or raise a clear error when the `features` extra is not installed.

    Feast's import points prometheus-client at a multiprocess directory of its own
    (PROMETHEUS_MULTIPROC_DIR); that is undone, so a server started later in the same process
    keeps its own counters on /metrics.
    """
    if sys.modules.get("feast") is not None:  # imported already (None: blocked, as if absent)
        return
    saved = {key: os.environ.get(key) for key in PROMETHEUS_KEYS}
    try:
        import feast  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "feast":
            raise
        raise ConfigError(
            "the feature store needs Feast, which this install leaves out; install the features "
            "extra: uv sync --extra features (or pip install 'churn-mlops[features]')"
        ) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
