"""The serving side of the registry: which version an alias names, and that version's verified model.

A model server needs two reads of the registry: resolve an alias (champion) to a version, and
load that version's files. Where the tracking store is a SQL database (the embedded SQLite or
PostgreSQL) and the artifacts are files, `SqlCatalog` does both with SQLAlchemy and plain file
reads, so the server never imports MLflow and starts in a second or two. Any other store (a
tracking server, object storage) goes through the MLflow client (`models/registry.py`).
`tests/integration/test_catalog.py` checks that both read the same versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

import sqlalchemy as sa

from churn_mlops.errors import ChecksumError, ModelNotFoundError, first_line
from churn_mlops.models.artifacts import CHECKSUMS_FILE, Predictor, predictor_from_files
from churn_mlops.sql import create_engine, safe_url, sqlite_file

if TYPE_CHECKING:
    from churn_mlops.settings import Settings

logger = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version as users see it."""

    name: str
    version: str
    aliases: list[str]
    run_id: str | None
    source: str
    created_at: str
    tags: dict[str, str]

    @property
    def metrics(self) -> dict[str, float]:
        """Test metrics recorded at registration."""
        return json.loads(self.tags.get("metrics", "{}"))  # type: ignore[no-any-return]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view, with decoded metrics and decision."""
        decision = json.loads(self.tags["decision"]) if "decision" in self.tags else None
        return {
            "name": self.name,
            "version": self.version,
            "aliases": self.aliases,
            "run_id": self.run_id,
            "source": self.source,
            "created_at": self.created_at,
            "metrics": self.metrics,
            "data_version": self.tags.get("data_version"),
            "decision": decision,
        }


class Catalog(Protocol):
    """Resolves and loads registered versions for a model server."""

    def resolve(self, reference: str) -> VersionInfo:
        """A version by number or alias."""
        ...

    def load(self, reference: str) -> tuple[VersionInfo, Predictor]:
        """A verified Predictor for a version or alias."""
        ...


def catalog_for(settings: Settings) -> Catalog:
    """The lightest catalog that can read the configured registry."""
    if sa.make_url(settings.tracking_uri).get_backend_name() in {"sqlite", "postgresql", "mysql"}:
        return SqlCatalog(
            settings.tracking_uri,
            settings.registry.model_name,
            settings.models_dir,
            timeout=settings.serving.database_timeout_seconds,
        )
    from churn_mlops.models.registry import Registry

    logger.info("tracking store %s: resolving models through the MLflow client", settings.tracking_uri)
    return Registry.from_settings(settings)


def verify_listing(info: VersionInfo, listing: bytes, where: str) -> None:
    """Refuse a checksum listing other than the one registered with the version."""
    if info.tags.get("checksums_sha256") != hashlib.sha256(listing).hexdigest():
        raise ChecksumError(f"{where}: does not match the checksums registered with version {info.version}")


class SqlCatalog:
    """Versions and aliases read straight from MLflow's SQL tracking store; files from disk.

    MLflow's tables are read, never written: `registered_model_aliases`, `model_versions` and
    `model_version_tags` (MLflow's schema since 2.3, when aliases arrived).
    """

    def __init__(self, tracking_uri: str, model_name: str, cache_dir: Path, timeout: float = 5.0) -> None:
        self.model_name = model_name
        self.cache_dir = cache_dir
        self.engine = create_engine(tracking_uri, timeout).execution_options(isolation_level="AUTOCOMMIT")
        self._fallback: Catalog | None = None
        self._tracking_uri = tracking_uri

    def resolve(self, reference: str) -> VersionInfo:
        """A version by number, alias (champion, challenger) or `latest`."""
        database = sqlite_file(self.engine)
        if database is not None and not database.exists():  # connecting would create it
            raise ModelNotFoundError(f"model {self.model_name!r} has no versions yet (run `churn train`)")
        try:
            return self._resolve(reference)
        except sa.exc.SQLAlchemyError as exc:
            raise ModelNotFoundError(
                f"cannot read the registry at {safe_url(self.engine.url)}: {first_line(exc)}"
            ) from exc

    def _resolve(self, reference: str) -> VersionInfo:
        name = self.model_name
        with self.engine.connect() as connection:
            aliases: dict[str, Any] = dict(
                connection.execute(
                    sa.text("SELECT alias, version FROM registered_model_aliases WHERE name = :name"),
                    {"name": name},
                ).all()
            )
            if reference == "latest":
                number = connection.execute(
                    sa.text("SELECT max(version) FROM model_versions WHERE name = :name"), {"name": name}
                ).scalar()
                if number is None:
                    raise ModelNotFoundError(f"model {name!r} has no versions yet (run `churn train`)")
            else:
                number = aliases.get(reference, reference)
            if not str(number).isdigit():
                raise ModelNotFoundError(f"model {name!r} has no version or alias {reference!r}")
            row = connection.execute(
                sa.text(
                    "SELECT version, run_id, source, creation_time FROM model_versions"
                    " WHERE name = :name AND version = :version"
                ),
                {"name": name, "version": int(number)},
            ).first()
            if row is None:
                raise ModelNotFoundError(f"model {name!r} has no version {reference!r}")
            tags: dict[str, Any] = dict(
                connection.execute(
                    sa.text(
                        "SELECT key, value FROM model_version_tags WHERE name = :name AND version = :version"
                    ),
                    {"name": name, "version": int(number)},
                ).all()
            )
        version = str(row.version)
        return VersionInfo(
            name=name,
            version=version,
            aliases=sorted(alias for alias, v in aliases.items() if str(v) == version),
            run_id=row.run_id,
            source=row.source or "",
            created_at=datetime.fromtimestamp(row.creation_time / 1000, UTC).isoformat(timespec="seconds"),
            tags={str(k): str(v) for k, v in tags.items()},
        )

    def load(self, reference: str) -> tuple[VersionInfo, Predictor]:
        """A verified Predictor for a version or alias, read from its artifact folder."""
        info = self.resolve(reference)
        folder = _local_folder(info.source)
        if folder is None:
            return self._client_catalog().load(info.version)
        if not folder.is_dir():
            raise ModelNotFoundError(f"{folder}: the artifacts of version {info.version} are missing")
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        verify_listing(info, files.get(CHECKSUMS_FILE, b""), str(folder / CHECKSUMS_FILE))
        return info, predictor_from_files(files, where=folder)

    def _client_catalog(self) -> Catalog:
        if self._fallback is None:
            from churn_mlops.models.registry import Registry

            logger.info("artifacts not on a file system: loading through the MLflow client")
            self._fallback = Registry(self._tracking_uri, self.model_name, self.cache_dir)
        return self._fallback


def _local_folder(source: str) -> Path | None:
    """The folder of a `file:` URI or a plain path; None for any remote store."""
    parsed = urlparse(source)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and source[1:3] in (":\\", ":/")):
        return Path(source)
    return None
