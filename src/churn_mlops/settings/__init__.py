"""Typed settings, read from CHURN_* environment variables and an optional YAML config file.

Nested sections use a double underscore: CHURN_DATA__SPEC=path.yaml. The config file is
`churn.yaml` in the working directory, or the file named by CHURN_CONFIG. The sections live in
`parts` (data, training, registry, serving, batch, feature store) and `operations` (monitoring,
rollout, dashboard, loop); everything is importable from here.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from churn_mlops.errors import ConfigError
from churn_mlops.settings.operations import (
    DEFAULT_RULES,
    AlertRule,
    DashboardSettings,
    DriftSettings,
    LoopSettings,
    MonitoringSettings,
    RolloutSettings,
)
from churn_mlops.settings.parts import (
    BatchSettings,
    DataSettings,
    FeatureStoreSettings,
    RegistrySettings,
    ServingSettings,
    TrainingSettings,
)

__all__ = [
    "DEFAULT_RULES",
    "AlertRule",
    "BatchSettings",
    "DashboardSettings",
    "DataSettings",
    "DriftSettings",
    "FeatureStoreSettings",
    "LoopSettings",
    "MonitoringSettings",
    "RegistrySettings",
    "RolloutSettings",
    "ServingSettings",
    "Settings",
    "TrainingSettings",
    "get_settings",
]


class Settings(BaseSettings):
    """All settings of churn-mlops; every piece of state lives under `home`."""

    model_config = SettingsConfigDict(
        env_prefix="CHURN_", env_nested_delimiter="__", env_ignore_empty=True, extra="ignore"
    )

    home: Path = Field(Path("churn-home"), description="the directory that holds all state")
    data: DataSettings = DataSettings()
    training: TrainingSettings = TrainingSettings()
    registry: RegistrySettings = RegistrySettings()
    serving: ServingSettings = ServingSettings()
    batch: BatchSettings = BatchSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    dashboard: DashboardSettings = DashboardSettings()
    rollout: RolloutSettings = RolloutSettings()
    loop: LoopSettings = LoopSettings()
    feature_store: FeatureStoreSettings = FeatureStoreSettings()

    @property
    def lake_dir(self) -> Path:
        """Versioned, validated data."""
        return self.home / "lake"

    @property
    def quarantine_dir(self) -> Path:
        """Rows that failed validation, with reasons, one file per run."""
        return self.home / "quarantine"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking and registry URI: a server, or SQLite under home."""
        return self.registry.tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def serving_database_url(self) -> str:
        """Where the prediction log and API keys live: a database URL, or SQLite under home."""
        return self.serving.database_url or f"sqlite:///{(self.home / 'serving.db').resolve()}"

    @property
    def feature_repo_dir(self) -> Path:
        """The generated Feast feature repository, its registry and its SQLite online store."""
        return self.home / "features"

    @property
    def models_dir(self) -> Path:
        """Verified local copies of model versions."""
        return self.home / "models"

    @property
    def audit_log(self) -> Path:
        """The audit trail: every gate decision, promotion, rollback and loop run, one JSON line each."""
        return self.home / "registry" / "audit.jsonl"

    @property
    def demo_dir(self) -> Path:
        """The demo's synthetic customer database."""
        return self.home / "demo"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order of precedence: arguments, environment, config file."""
        config = Path(os.environ.get("CHURN_CONFIG", "churn.yaml"))
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=config)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once; a bad value is a ConfigError naming the first bad field."""
    try:
        return Settings()
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise ConfigError(f"settings: {field}: {problem['msg']}") from None
