"""Shared fixtures: an isolated CHURN_HOME, the real Telco data, and the real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from churn_mlops.data.spec import DatasetSpec, load_spec
from churn_mlops.settings import get_settings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before LightGBM loads
ROOT = Path(__file__).resolve().parents[1]
TELCO_CSV = ROOT.parent / "shared" / "datasets" / "telco_churn.csv"
POSTGRES_URL = os.environ.get("CHURN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def require_service(name: str, reason: str) -> None:
    """Skip a test whose server is absent; in CI an absent server is a failure."""
    message = f"{name} is not reachable ({reason})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(message)


def require_tool(name: str, install: str, path: Path | str | None = None) -> str:
    """A program the tests run: at `path` if given, else beside this Python (the project's
    environment), else on PATH. Absent, the test skips saying how to install it; in CI it fails."""
    if path is not None:
        found = shutil.which(str(path))
    else:
        search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        found = shutil.which(name, path=search)
    if found is None:
        require_service(name, f"missing; {install}")
    assert found is not None
    return found


@pytest.fixture
def churn_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh CHURN_HOME for one test; settings are re-read from it."""
    home = tmp_path / "churn-home"
    monkeypatch.setenv("CHURN_HOME", str(home))
    monkeypatch.delenv("CHURN_DATA__SPEC", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def spec() -> DatasetSpec:
    """The built-in Telco dataset spec."""
    return load_spec()


@pytest.fixture(scope="session")
def telco_csv() -> Path:
    """The real IBM Telco CSV; tests that need it skip where shared/ is absent."""
    if not TELCO_CSV.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{TELCO_CSV} is missing in CI")
        pytest.skip(f"{TELCO_CSV} not found (it ships with the project's shared/ folder)")
    return TELCO_CSV


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[sa.Engine]:
    """An engine on the real PostgreSQL server."""
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        require_service("PostgreSQL at " + engine.url.render_as_string(), str(exc).splitlines()[0])
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_table(postgres_engine: sa.Engine) -> Iterator[str]:
    """A unique table name in PostgreSQL, dropped after the test."""
    name = f"churn_test_{uuid.uuid4().hex[:10]}"
    yield name
    with postgres_engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
