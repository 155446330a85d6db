"""The model registry on MLflow: versions, aliases (champion, challenger), decisions, loading.

The embedded default is MLflow on SQLite under CHURN_HOME; a tracking server works the same by
URL. Versions are folders of plain artifacts (see artifacts.py); aliases, not stages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from churn_mlops.errors import ModelNotFoundError
from churn_mlops.models.artifacts import CHECKSUMS_FILE, Predictor, load_predictor, verify
from churn_mlops.models.catalog import CHALLENGER, CHAMPION, VersionInfo, verify_listing

if TYPE_CHECKING:
    from churn_mlops.settings import Settings

HISTORY_TAG = "champion_history"


class Registry:
    """Registered versions of one model, in an MLflow tracking store."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """The registry the settings name: their tracking URI, model name and model cache."""
        return cls(settings.tracking_uri, settings.registry.model_name, settings.models_dir)

    def __init__(self, tracking_uri: str, model_name: str, cache_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.cache_dir = cache_dir
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def register(self, run_id: str, artifacts: Path, artifact_path: str, tags: dict[str, str]) -> VersionInfo:
        """Make the run's artifact folder a new version, tagged, with the challenger alias.

        `artifacts` is the local folder that was logged; the sha256 of its checksum listing is
        kept on the version, so a store whose files and listing were both changed is refused.
        """
        self._ensure_model()
        listing = hashlib.sha256((artifacts / CHECKSUMS_FILE).read_bytes()).hexdigest()
        tags = {**tags, "checksums_sha256": listing}
        run = self.client.get_run(run_id)
        created = self.client.create_model_version(
            self.model_name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run_id, tags=tags
        )
        self.client.set_registered_model_alias(self.model_name, CHALLENGER, created.version)
        return self.resolve(str(created.version))

    def versions(self) -> list[VersionInfo]:
        """All versions, oldest first."""
        try:
            found = self.client.search_model_versions(f"name='{self.model_name}'")
        except MlflowException:
            return []
        aliases = self._aliases()
        return sorted((self._info(v, aliases) for v in found), key=lambda v: int(v.version))

    def resolve(self, reference: str) -> VersionInfo:
        """A version by number, alias (champion, challenger) or `latest`."""
        aliases = self._aliases()
        if reference == "latest":
            versions = self.versions()
            if not versions:
                raise ModelNotFoundError(f"model {self.model_name!r} has no versions yet (run `churn train`)")
            return versions[-1]
        number = aliases.get(reference, reference)
        if not str(number).isdigit():
            raise ModelNotFoundError(f"model {self.model_name!r} has no version or alias {reference!r}")
        try:
            return self._info(self.client.get_model_version(self.model_name, str(number)), aliases)
        except MlflowException as exc:
            raise ModelNotFoundError(f"model {self.model_name!r} has no version {reference!r}") from exc

    def champion(self) -> VersionInfo | None:
        """The current champion, if there is one."""
        return self.resolve(CHAMPION) if CHAMPION in self._aliases() else None

    def fetch(self, reference: str, directory: Path) -> Path:
        """Download a version's artifacts into a new folder and verify them; return the folder."""
        info = self.resolve(reference)
        directory.mkdir(parents=True, exist_ok=False)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=info.source, dst_path=str(directory), tracking_uri=self.tracking_uri
            )
        )
        verify(local)
        listing = local / CHECKSUMS_FILE
        verify_listing(info, listing.read_bytes(), str(listing))
        return local

    def load(self, reference: str) -> tuple[VersionInfo, Predictor]:
        """A verified Predictor for a version or alias; its files are read and then deleted."""
        info = self.resolve(reference)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(
            prefix=f"{self.model_name}-v{info.version}-", dir=self.cache_dir
        ) as tmp:
            return info, load_predictor(self.fetch(info.version, Path(tmp) / "download"))

    def set_alias(self, alias: str, version: str) -> None:
        """Point an alias at a version."""
        self.client.set_registered_model_alias(self.model_name, alias, version)

    def champion_history(self) -> list[str]:
        """Versions that have been champion, oldest first."""
        try:
            model = self.client.get_registered_model(self.model_name)
        except MlflowException:
            return []
        return json.loads(model.tags.get(HISTORY_TAG, "[]"))  # type: ignore[no-any-return]

    def set_champion(self, version: str, history: list[str]) -> None:
        """Make a version champion and store the champion history."""
        self.client.set_registered_model_tag(self.model_name, HISTORY_TAG, json.dumps(history))
        self.set_alias(CHAMPION, version)

    def record(self, version: str, record: dict[str, Any], audit_log: Path) -> None:
        """Store a decision on the version (tags) and append it to the audit log."""
        record = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": self.model_name,
            "version": version,
            **record,
        }
        self.client.set_model_version_tag(self.model_name, version, "decision", json.dumps(record))
        self.client.set_model_version_tag(self.model_name, version, "gate.outcome", str(record.get("action")))
        audit_log.parent.mkdir(parents=True, exist_ok=True)
        with audit_log.open("a") as file:
            file.write(json.dumps(record) + "\n")

    def _ensure_model(self) -> None:
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            self.client.create_registered_model(self.model_name)

    def _aliases(self) -> dict[str, str]:
        try:
            return {k: str(v) for k, v in self.client.get_registered_model(self.model_name).aliases.items()}
        except MlflowException:
            return {}

    def _info(self, version: ModelVersion, aliases: dict[str, str]) -> VersionInfo:
        number = str(version.version)
        created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
        return VersionInfo(
            name=self.model_name,
            version=number,
            aliases=sorted(a for a, v in aliases.items() if v == number),
            run_id=version.run_id,
            source=version.source or "",
            created_at=created,
            tags=dict(version.tags),
        )
