"""Customer snapshots over time: a table with the spec's event-time column holds several rows per id."""

from __future__ import annotations

import polars as pl

from churn_mlops.data.spec import DatasetSpec


def has_history(frame: pl.DataFrame, spec: DatasetSpec) -> bool:
    """Whether the frame holds snapshots over time (it has the spec's event-time column)."""
    return spec.event_time is not None and spec.event_time.name in frame.columns


def newest_snapshots(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Each customer's newest snapshot, without the timestamp columns; a table without history as is."""
    if not has_history(frame, spec):
        return frame
    assert spec.event_time is not None
    newest = frame.sort(spec.id.name, spec.event_time.name).unique(
        spec.id.name, keep="last", maintain_order=True
    )
    return newest.drop([c for c in spec.time_columns if c in frame.columns])


def describe_rows(frame: pl.DataFrame, spec: DatasetSpec) -> str:
    """How a lake table becomes training rows, for lineage: as is, or the newest snapshot of each id."""
    if not has_history(frame, spec):
        return f"lake: all {frame.height} rows"
    customers = frame.get_column(spec.id.name).n_unique()
    return f"lake: newest snapshot of each of {customers} customers ({frame.height} snapshots)"


def lake_training_rows(frame: pl.DataFrame, spec: DatasetSpec) -> tuple[pl.DataFrame, dict[str, str]]:
    """A lake table's training rows (the newest snapshot of each customer) and that choice, for lineage."""
    return newest_snapshots(frame, spec), {"training_set": describe_rows(frame, spec)}
