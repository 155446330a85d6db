"""Typed settings, read from CHURN_* environment variables and an optional YAML config file.

Nested sections use a double underscore: CHURN_DATA__SPEC=path.yaml. The config file is
`churn.yaml` in the working directory, or the file named by CHURN_CONFIG.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


class DataSettings(BaseModel):
    """The data layer: which dataset spec describes the customer table."""

    spec: Path | None = Field(None, description="dataset spec YAML; the built-in Telco spec if unset")


class Settings(BaseSettings):
    """All settings of churn-mlops; every piece of state lives under `home`."""

    model_config = SettingsConfigDict(env_prefix="CHURN_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(Path("churn-home"), description="the directory that holds all state")
    data: DataSettings = DataSettings()

    @property
    def lake_dir(self) -> Path:
        """Versioned, validated data."""
        return self.home / "lake"

    @property
    def quarantine_dir(self) -> Path:
        """Rows that failed validation, with reasons, one file per run."""
        return self.home / "quarantine"

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
    """The process's settings, read once."""
    return Settings()
