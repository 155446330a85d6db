"""Settings from the environment: an empty variable is a setting left unset."""

from __future__ import annotations

from pathlib import Path

import pytest

from churn_mlops.serving.online import online_configured
from churn_mlops.settings import Settings


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Compose files and Kubernetes Secrets pass an optional value as an empty string: a Redis
    URL left empty means no Redis, for the rate limits and for the online store alike."""
    monkeypatch.chdir(tmp_path)  # no churn.yaml here
    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHURN_SERVING__REDIS_URL", "")
    monkeypatch.setenv("CHURN_FEATURE_STORE__REDIS_URL", "")
    settings = Settings()
    assert settings.serving.redis_url is None
    assert settings.feature_store.redis_url is None
    assert not online_configured(settings)  # no Redis, and no SQLite store file under home

    monkeypatch.setenv("CHURN_FEATURE_STORE__REDIS_URL", "redis://localhost:6379/1")
    assert online_configured(Settings())
