"""The server's catalog reads MLflow's tracking store as the MLflow client does, without importing it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from churn_mlops.errors import ChecksumError, ModelNotFoundError
from churn_mlops.models.catalog import SqlCatalog, catalog_for
from churn_mlops.models.registry import Registry
from churn_mlops.settings import Settings
from tests.integration.serving_fixtures import TrainedHome

MLFLOW = f"mlflow {importlib.metadata.version('mlflow')}"


def _pair(home: Path) -> tuple[SqlCatalog, Registry]:
    settings = Settings(home=home)
    catalog = catalog_for(settings)
    assert isinstance(catalog, SqlCatalog), "the embedded default resolves models without the MLflow client"
    return catalog, Registry.from_settings(settings)


def test_aliases_and_versions_resolve_as_the_mlflow_client_sees_them(trained_home: TrainedHome) -> None:
    catalog, registry = _pair(trained_home.home)
    for reference in ("champion", "1", "latest"):
        assert catalog.resolve(reference) == registry.resolve(reference), f"{reference} (schema of {MLFLOW})"
    for reference in ("canary", "99"):
        with pytest.raises(ModelNotFoundError, match=reference):
            catalog.resolve(reference)


def test_the_loaded_champion_scores_as_the_registry_s(trained_home: TrainedHome) -> None:
    catalog, registry = _pair(trained_home.home)
    (info, ours), (_, theirs) = catalog.load("champion"), registry.load("champion")
    columns = {name: [c.get(name) for c in trained_home.customers] for name in trained_home.customers[0]}
    assert info.version == "1"
    assert np.array_equal(ours.predict_proba(columns), theirs.predict_proba(columns))


def test_files_and_listing_changed_together_are_refused(trained_home: TrainedHome, tmp_path: Path) -> None:
    home = tmp_path / "churn-home"
    shutil.copytree(trained_home.home, home)
    engine = sa.create_engine(f"sqlite:///{home / 'mlflow.db'}")
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE model_versions SET source = replace(source, :old, :new)"),
            {"old": trained_home.home.as_uri(), "new": home.as_uri()},
        )
    engine.dispose()
    catalog, _ = _pair(home)
    folder = Path(catalog.resolve("champion").source.removeprefix("file://"))
    model = folder / "model.txt"
    model.write_text(model.read_text() + "\n")
    listing = json.loads((folder / "checksums.json").read_text())
    listing["model.txt"] = hashlib.sha256(model.read_bytes()).hexdigest()
    (folder / "checksums.json").write_text(json.dumps(listing))
    with pytest.raises(ChecksumError, match="does not match the checksums registered with version 1"):
        catalog.load("champion")
    (folder / "checksums.json").unlink()
    with pytest.raises(ChecksumError):
        catalog.load("champion")
    shutil.rmtree(folder)
    with pytest.raises(ModelNotFoundError, match="artifacts of version 1 are missing"):
        catalog.load("champion")


def test_a_home_without_a_registry_has_no_model_and_gets_no_empty_database(tmp_path: Path) -> None:
    catalog = catalog_for(Settings(home=tmp_path))
    with pytest.raises(ModelNotFoundError, match="no versions yet"):
        catalog.load("champion")
    assert not (tmp_path / "mlflow.db").exists()
    (tmp_path / "mlflow.db").touch()
    with pytest.raises(ModelNotFoundError, match=r"cannot read the registry at sqlite:///.*no such table"):
        catalog.resolve("champion")
