"""Fixtures of the integration tests: a trained home for the serving tests."""

from __future__ import annotations

import pytest

from tests.integration.serving_fixtures import TrainedHome, make_trained_home


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """One trained home for the whole session (training takes seconds)."""
    return make_trained_home(tmp_path_factory.mktemp("serving"))
