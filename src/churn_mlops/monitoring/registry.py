"""Reference profiles of model versions, read from the model registry (the I/O).

A version's reference is its `profile.json`, threshold and test metrics, fetched and verified
like any model artifact.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from churn_mlops.errors import ModelNotFoundError, MonitoringError
from churn_mlops.monitoring.reference import Reference
from churn_mlops.settings import Settings

logger = logging.getLogger(__name__)


class References:
    """Reference profiles by model version, fetched from the registry once per run."""

    def __init__(self, settings: Settings) -> None:
        from churn_mlops.models.registry import Registry

        self.registry = Registry.from_settings(settings)
        self.cache_dir = settings.models_dir
        self._known: dict[str, Reference | None] = {}

    def get(self, version: str) -> Reference | None:
        """The version's reference; None (with a warning, once) if the registry has no such version.

        A registry that cannot be read, or a version whose files fail verification, is an error:
        skipping would move the watermark past predictions that can be profiled later.
        """
        if version not in self._known:
            self._known[version] = self._load(version)
        return self._known[version]

    def _load(self, version: str) -> Reference | None:
        try:
            info = self.registry.resolve(version)
        except ModelNotFoundError as exc:
            if not self.registry.versions():  # no versions at all: more likely unreachable than empty
                raise MonitoringError(f"cannot read the model registry for version {version}: {exc}") from exc
            logger.warning("model version %s is not in the registry; its predictions are skipped", version)
            return None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            folder = self.registry.fetch(info.version, Path(tmp) / "download")
            profile = json.loads((folder / "profile.json").read_text())
            meta = json.loads((folder / "model.json").read_text())
        return Reference.from_profile(info.version, profile, float(meta["threshold"]), info.metrics)
