"""Point-in-time training sets: each label joined with the customer's features as of its time.

The labels come from a lake version: the target with its observation time (the spec's
label-time column) as the customer's snapshots carry them. Feast's historical retrieval takes,
for each label, the newest snapshot at or before the label's time (and not older than the
view's ttl), so a change to the customer's record after the label never reaches the training
row. A label with no such snapshot is left out and counted in the lineage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from churn_mlops.data.lake import LakeVersion
from churn_mlops.data.snapshots import has_history
from churn_mlops.data.spec import DatasetSpec, Kind
from churn_mlops.data.timestamps import TIMESTAMP
from churn_mlops.errors import DataValidationError
from churn_mlops.featurestore.layout import FEATURE_VIEW
from churn_mlops.featurestore.materialize import apply_version
from churn_mlops.featurestore.repo import feast_errors, open_store, quiet
from churn_mlops.settings import Settings

logger = logging.getLogger(__name__)
LABEL_TIME = "event_timestamp"  # the entity frame's timestamp column, as Feast names it


@dataclass(frozen=True)
class TrainingSet:
    """Training rows (id, features, target) and their lineage."""

    frame: pl.DataFrame
    lineage: dict[str, str]


def label_frame(frame: pl.DataFrame, spec: DatasetSpec, ingested_at: datetime) -> pl.DataFrame:
    """The labels of a lake table: id, the label's observation time, the target; one row per label.

    With label times, every distinct (id, time, target) on the customer's snapshots is a label; a
    customer with two targets at one time is an error. Without, each customer's newest snapshot
    gives the label at its time; without history, every row gives one at the ingest time.
    """
    if spec.target.name not in frame.columns:
        raise DataValidationError(f"target column {spec.target.name!r} is missing: no labels to train on")
    id_, target = spec.id.name, spec.target.name
    if not has_history(frame, spec):
        return frame.select(id_, pl.lit(ingested_at).cast(TIMESTAMP).alias(LABEL_TIME), target)
    assert spec.event_time is not None
    if spec.label_time is None or spec.label_time.name not in frame.columns:
        newest = frame.sort(id_, spec.event_time.name).group_by(id_, maintain_order=True).last()
        return newest.select(id_, pl.col(spec.event_time.name).alias(LABEL_TIME), target)
    labels = frame.select(id_, pl.col(spec.label_time.name).alias(LABEL_TIME), target).unique()
    clash = labels.filter(pl.struct(id_, LABEL_TIME).is_duplicated())
    if clash.height:
        first = clash.row(0, named=True)
        raise DataValidationError(
            f"customer {first[id_]!r} has two {target} values observed at {first[LABEL_TIME]}: "
            f"each label needs one outcome"
        )
    return labels.sort(id_, LABEL_TIME)


def training_set(
    settings: Settings, spec: DatasetSpec, version: LakeVersion, frame: pl.DataFrame, as_of: datetime | None
) -> TrainingSet:
    """The labels observed up to `as_of` (default all), each with the features as of its time."""
    ingested_at = datetime.fromisoformat(version.manifest.created_at)
    labels = label_frame(frame, spec, ingested_at)
    if as_of is not None:
        labels = labels.filter(pl.col(LABEL_TIME) <= as_of)
    if labels.height == 0:
        raise DataValidationError(f"no label observed at or before {as_of}: nothing to train on")
    apply_version(settings, spec, version)
    store = open_store(settings)
    features = [f"{FEATURE_VIEW}:{f.name}" for f in spec.features]
    with feast_errors("read historical features"), quiet():
        joined = store.get_historical_features(entity_df=labels.to_pandas(), features=features).to_df()
    rows = _typed(pl.from_pandas(joined), spec).sort(spec.id.name)
    names = [f.name for f in spec.features]
    found = rows.filter(~pl.all_horizontal(pl.col(n).is_null() for n in names))
    missing = labels.height - found.height  # Feast may return such a label with nulls, or not at all
    if missing:
        logger.warning(
            "%d labels have no snapshot at or before their time (within the ttl); left out", missing
        )
    newest = labels.select(pl.col(LABEL_TIME).max()).item()
    lineage = {
        "training_set": f"feature store: {found.height} labels, each with its features as of its time "
        f"(point-in-time join), labels observed up to {as_of.isoformat() if as_of else newest}",
        "feature_store": f"{settings.feature_store.project}/{FEATURE_VIEW}",
        "features_as_of": as_of.isoformat() if as_of else "all labels",
        "labels": str(labels.height),
        "labels_without_features": str(missing),
    }
    return TrainingSet(found.select(spec.columns), lineage)


def _typed(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Feast's Float64 numbers back to the lake's types (integer columns as Int64), the target as bool."""
    integers = [f.name for f in spec.features if f.type is Kind.NUMERIC and f.integer]
    flags = [f.name for f in spec.features if f.type is Kind.BOOLEAN]
    return frame.with_columns(
        *(pl.col(n).cast(pl.Int64) for n in integers),
        *(pl.col(n).cast(pl.Boolean) for n in flags),
        pl.col(spec.target.name).cast(pl.Boolean),
    )
