"""A lake version as a Feast source: canonical features in Feast's types, with an event timestamp.

The staged Parquet lives under CHURN_HOME/features/sources/, one file per lake version, written
once (content-addressed, like the lake). Integer columns become Float64, as the feature view
declares them. A version without an event-time column gets its ingest time as every row's
event timestamp, so it can still be materialized.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import polars as pl

from churn_mlops.data.lake import LakeVersion
from churn_mlops.data.snapshots import has_history
from churn_mlops.data.spec import DatasetSpec, Kind
from churn_mlops.data.timestamps import TIMESTAMP
from churn_mlops.errors import DataValidationError

DEFAULT_EVENT_TIME = "event_timestamp"


def event_time_field(spec: DatasetSpec) -> str:
    """The staged source's timestamp column: the spec's event time, or Feast's usual name."""
    return spec.event_time.name if spec.event_time is not None else DEFAULT_EVENT_TIME


def feast_frame(frame: pl.DataFrame, spec: DatasetSpec, ingested_at: datetime) -> pl.DataFrame:
    """The id, the event timestamp and every feature of a lake table, in the feature view's types."""
    missing = [c for c in (spec.id.name, *(f.name for f in spec.features)) if c not in frame.columns]
    if missing:
        raise DataValidationError(f"the lake version lacks feature columns: {', '.join(missing)}")
    field = event_time_field(spec)
    stamp = pl.col(field) if has_history(frame, spec) else pl.lit(ingested_at).cast(TIMESTAMP).alias(field)
    numeric = [f.name for f in spec.features if f.type is Kind.NUMERIC]
    return frame.select(
        pl.col(spec.id.name),
        stamp,
        *(pl.col(f.name).cast(pl.Float64) if f.name in numeric else pl.col(f.name) for f in spec.features),
    )


def stage(version: LakeVersion, spec: DatasetSpec, directory: Path) -> Path:
    """The Feast-ready Parquet of a lake version, written on first use."""
    path = directory / "sources" / f"{version.manifest.dataset}-{version.manifest.version}.parquet"
    if path.exists():
        return path
    ingested_at = datetime.fromisoformat(version.manifest.created_at)
    staged = feast_frame(pl.read_parquet(version.data_path), spec, ingested_at)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    staged.write_parquet(partial)
    os.replace(partial, path)
    return path
