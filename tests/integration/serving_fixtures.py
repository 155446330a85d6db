"""A trained CHURN_HOME with a champion and API keys, shared by the serving tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from churn_mlops.data.ingest import ingest
from churn_mlops.data.lake import Lake
from churn_mlops.data.sinks import write_frames
from churn_mlops.data.sources import Source
from churn_mlops.data.spec import load_spec
from churn_mlops.data.synthetic import generate
from churn_mlops.pipeline.training import train_and_register
from churn_mlops.serving.keys import KeyStore
from churn_mlops.settings import Settings, TrainingSettings


@dataclass(frozen=True)
class TrainedHome:
    """A CHURN_HOME holding a champion (v1), with keys for each scope."""

    home: Path
    predict_key: str
    admin_key: str
    customers: list[dict[str, object]]

    def environment(self, **extra: str) -> dict[str, str]:
        """Environment variables that point churn-mlops at this home."""
        return {**os.environ, "CHURN_HOME": str(self.home), **extra}


def make_trained_home(
    root: Path, rows: int = 3000, candidates: tuple[str, ...] = ("lightgbm",)
) -> TrainedHome:
    """Ingest synthetic customers, train and register a champion, create one key per scope.

    The champion is LightGBM unless `candidates` says otherwise: the serving paths that only a
    tree model has (LightGBM's single-row API, SHAP contributions) are what most tests check.
    """
    training = TrainingSettings(candidates=list(candidates))  # type: ignore[arg-type]
    settings = Settings(home=root / "churn-home", training=training)
    spec = load_spec()
    csv = root / "customers.csv"
    write_frames(generate(rows, seed=21), Source(str(csv)))
    result = ingest(
        Source(str(csv)), spec, lake=Lake(settings.lake_dir), quarantine_dir=settings.quarantine_dir
    )
    assert result.version is not None
    train_and_register(Lake(settings.lake_dir).read(result.version), result.version, spec, settings)
    keys = KeyStore(settings.serving_database_url)
    predict_key, _ = keys.create("client", ["predict"])
    admin_key, _ = keys.create("operator", ["admin"])
    customers = pl.read_csv(csv, infer_schema=False).head(20)
    canonical = [_canonical(row) for row in ingest_rows(customers)]
    return TrainedHome(settings.home, predict_key, admin_key, canonical)


def ingest_rows(raw: pl.DataFrame) -> list[dict[str, object]]:
    """Raw CSV rows as canonical, typed customer records (what an API client sends)."""
    from churn_mlops.data.validation import validate

    return validate(raw, load_spec()).valid.drop("churn").to_dicts()


def _canonical(row: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in row.items() if v is not None or k == "total_charges"}
