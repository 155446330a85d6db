"""Scores and outcomes for the label join: what the monitoring store keeps to match predictions
with the outcomes that arrive later, and the join itself.

Each prediction with a customer id is kept (probability, decision, slice keys, time in epoch
milliseconds); each outcome once per customer and time. A prediction at t is matched with its
customer's first outcome observed in (t, t + horizon].
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import polars as pl
import sqlalchemy as sa

from churn_mlops.monitoring import tables
from churn_mlops.monitoring.tables import now_text


class Labelled(NamedTuple):
    """Labelled predictions: probabilities, decisions, outcomes (1 churned) and slice keys (JSON)."""

    probabilities: np.ndarray
    decisions: np.ndarray
    outcomes: np.ndarray
    slices: list[str | None]


class Outcomes:
    """The scores and labels tables of the monitoring store."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def labels_since(self, stamp: str, after_ms: int, until_ms: int) -> bool:
        """Whether an outcome observed in (after_ms, until_ms] was stored after `stamp`."""
        lab = tables.labels
        query = sa.select(lab.c.id).where(
            lab.c.observed_ms > after_ms, lab.c.observed_ms <= until_ms, lab.c.ingested_at > stamp
        )
        with self.engine.connect() as connection:
            return connection.execute(query.limit(1)).first() is not None

    def add_scores(self, frame: pl.DataFrame, connection: sa.Connection) -> None:
        """Keep the scores of predictions with a customer id, for the label join."""
        if frame.height:
            connection.execute(tables.scores.insert(), frame.to_dicts())

    def scored(self, version: str, start_ms: int, end_ms: int) -> int:
        """Predictions with a customer id by `version` in [start_ms, end_ms)."""
        s = tables.scores
        query = sa.select(sa.func.count()).where(
            s.c.model_version == version, s.c.at_ms >= start_ms, s.c.at_ms < end_ms
        )
        with self.engine.connect() as connection:
            return int(connection.scalar(query) or 0)

    def labelled(
        self, version: str, start_ms: int, end_ms: int, horizon_ms: int, chunk_rows: int
    ) -> Iterator[Labelled]:
        """The window's predictions that have an outcome, each matched with the first outcome
        observed in (at, at + horizon], `chunk_rows` at a time."""
        s, lab = tables.scores, tables.labels
        rank = sa.func.row_number().over(partition_by=s.c.prediction_id, order_by=lab.c.observed_ms)
        joined = (
            sa.select(s.c.probability, s.c.prediction, lab.c.churned, s.c.slices, rank.label("rank"))
            .join(lab, outcome_within(horizon_ms))
            .where(s.c.model_version == version, s.c.at_ms >= start_ms, s.c.at_ms < end_ms)
            .subquery()
        )
        columns = (joined.c.probability, joined.c.prediction, joined.c.churned, joined.c.slices)
        query = sa.select(*columns).where(joined.c.rank == 1)
        with self.engine.connect() as connection:
            result = connection.execution_options(yield_per=chunk_rows).execute(query)
            for part in result.partitions():
                rows = [tuple(row) for row in part]
                values = np.array([row[:3] for row in rows], dtype=np.float64)
                yield Labelled(values[:, 0], values[:, 1], values[:, 2], [row[3] for row in rows])

    def add_labels(self, frame: pl.DataFrame, source: str) -> tuple[int, int]:
        """Store outcomes (customer_id, churned, observed_ms); (added, already known) counts.

        An outcome already stored for the same customer and time is a duplicate, not an error.
        """
        table, ingested = tables.labels, now_text()
        added = 0
        with self.engine.begin() as connection:
            existing = _existing_labels(connection, frame)
            fresh = frame.join(existing, on=["customer_id", "observed_ms"], how="anti").unique(
                ["customer_id", "observed_ms"], keep="first", maintain_order=True
            )
            rows = fresh.with_columns(source=pl.lit(source), ingested_at=pl.lit(ingested)).to_dicts()
            for start in range(0, len(rows), 10_000):
                connection.execute(table.insert(), rows[start : start + 10_000])
            added = len(rows)
        return added, frame.height - added

    def unknown_customers(self, customer_ids: pl.Series) -> int:
        """How many of these customers have no scored prediction kept."""
        ids = customer_ids.unique().to_list()
        known = 0
        with self.engine.connect() as connection:
            for start in range(0, len(ids), 5_000):
                chunk = ids[start : start + 5_000]
                column = tables.scores.c.customer_id
                query = sa.select(sa.func.count(sa.distinct(column))).where(column.in_(chunk))
                known += int(connection.scalar(query) or 0)
        return len(ids) - known


def _existing_labels(connection: sa.Connection, frame: pl.DataFrame) -> pl.DataFrame:
    table = tables.labels
    ids = frame.get_column("customer_id").unique().to_list()
    found: list[tuple[str, int]] = []
    for start in range(0, len(ids), 5_000):
        query = sa.select(table.c.customer_id, table.c.observed_ms).where(
            table.c.customer_id.in_(ids[start : start + 5_000])
        )
        found += [(r[0], r[1]) for r in connection.execute(query)]
    return pl.DataFrame(found, schema={"customer_id": pl.String, "observed_ms": pl.Int64}, orient="row")


def outcome_within(horizon_ms: int) -> sa.ColumnElement[bool]:
    """The label join: a prediction at t meets its customer's outcomes observed in (t, t + horizon]."""
    s, lab = tables.scores, tables.labels
    return sa.and_(
        lab.c.customer_id == s.c.customer_id,
        lab.c.observed_ms > s.c.at_ms,
        lab.c.observed_ms <= s.c.at_ms + horizon_ms,
    )
