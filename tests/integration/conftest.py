"""Fixtures of the integration tests: a trained home for the serving tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from churn_mlops.settings import get_settings
from tests.integration.serving_fixtures import TrainedHome, make_trained_home


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """One trained home for the whole session (training takes seconds)."""
    return make_trained_home(tmp_path_factory.mktemp("serving"))


@pytest.fixture
def home(trained_home: TrainedHome, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrainedHome]:
    """The trained home as CHURN_HOME, with small batches so every scoring run streams several."""
    monkeypatch.setenv("CHURN_HOME", str(trained_home.home))
    monkeypatch.setenv("CHURN_BATCH__BATCH_ROWS", "1000")
    get_settings.cache_clear()
    yield trained_home
    get_settings.cache_clear()
