"""What the loop trains on: customers joined with the outcomes that arrived, and the old rows.

By default the customers are the ones the server scored: each labelled prediction's request
body (from the prediction log) with the first outcome observed within the label horizon after
it, the newest per customer. With `loop.source`, the customers are read from that source
instead and joined with each one's newest outcome. With `loop.keep_training_data`, the
champion's own training rows come too, and a customer's newer row replaces its old one.
"""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from churn_mlops.data.sources import Source, read_source
from churn_mlops.data.spec import DatasetSpec, Kind
from churn_mlops.monitoring import tables
from churn_mlops.monitoring.job import decode_inputs
from churn_mlops.monitoring.outcomes import outcome_within
from churn_mlops.monitoring.store import MonitorStore
from churn_mlops.settings import Settings

DAY_MS = 86_400_000


def labelled_customers(store: MonitorStore, spec: DatasetSpec, settings: Settings) -> pl.DataFrame:
    """Canonical customer rows with the target set from the outcomes that arrived."""
    if settings.loop.source:
        source = Source(settings.loop.source, settings.loop.source_table)
        customers = read_source(source, recover=True).drop(spec.target.source_names, strict=False)
        return _join_newest_outcome(customers, store, spec)
    return _from_log(store, spec, settings)


def combine(new: pl.DataFrame, old: pl.DataFrame | None, spec: DatasetSpec) -> pl.DataFrame:
    """The new rows, and the old ones of customers the new rows do not hold."""
    if old is None or old.height == 0:
        return new
    columns = [c for c in spec.columns if c in new.columns]
    kept = old.join(new.select(spec.id.name), on=spec.id.name, how="anti")
    return pl.concat([new.select(columns), kept.select(columns)], how="vertical_relaxed")


def _from_log(store: MonitorStore, spec: DatasetSpec, settings: Settings) -> pl.DataFrame:
    s, lab, p = tables.scores, tables.labels, store.predictions
    horizon_ms = int(settings.monitoring.label_horizon_days * DAY_MS)
    query = (
        sa.select(p.c.inputs, lab.c.churned)
        .select_from(s)
        .join(lab, outcome_within(horizon_ms))
        .join(p, p.c.id == s.c.prediction_id)
        .order_by(s.c.at_ms.desc(), lab.c.observed_ms)
        .limit(settings.loop.max_log_rows)
    )
    with store.errors(), store.engine.connect() as connection:
        rows = connection.execute(query).all()
    if not rows:
        return pl.DataFrame()
    frame = decode_inputs(pl.Series([r[0] for r in rows], dtype=pl.String), spec).with_columns(
        pl.Series(spec.target.name, [bool(r[1]) for r in rows], dtype=pl.Boolean)
    )
    newest = frame.filter(pl.col(spec.id.name).is_not_null()).unique(spec.id.name, keep="first")
    return _typed(newest, spec)


def _join_newest_outcome(customers: pl.DataFrame, store: MonitorStore, spec: DatasetSpec) -> pl.DataFrame:
    lab = tables.labels
    query = sa.select(lab.c.customer_id, lab.c.churned, lab.c.observed_ms)
    with store.errors(), store.engine.connect() as connection:
        outcomes = pl.DataFrame(connection.execute(query).all(), schema=["id", "churned", "at"], orient="row")
    newest = outcomes.sort("at", descending=True).unique("id", keep="first")
    id_column = next((n for n in spec.id.source_names if n in customers.columns), spec.id.name)
    joined = customers.with_columns(pl.col(id_column).cast(pl.String)).join(
        newest.select(
            pl.col("id").alias(id_column), pl.col("churned").cast(pl.Boolean).alias(spec.target.name)
        ),
        on=id_column,
        how="inner",
    )
    return joined


def _typed(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Whole-number features back to integers (the log's JSON reads every number as a float)."""
    integers = [f.name for f in spec.features if f.type == Kind.NUMERIC and f.integer]
    return frame.with_columns(
        pl.col(name).round().cast(pl.Int64) for name in integers if name in frame.columns
    )
