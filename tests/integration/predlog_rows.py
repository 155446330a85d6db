"""The prediction log's rows, read back for the tests."""

from __future__ import annotations

from typing import Final

import polars as pl
import sqlalchemy as sa

from churn_mlops.serving.predlog import PredictionLog

SCHEMA: Final[dict[str, pl.DataType]] = {
    "id": pl.Int64(),
    "request_id": pl.String(),
    "at": pl.Datetime("us", "UTC"),
    "key_name": pl.String(),
    "model_version": pl.String(),
    "inputs": pl.String(),
    "probability": pl.Float64(),
    "prediction": pl.Int64(),
    "latency_ms": pl.Float64(),
}


def logged(log: PredictionLog, limit: int | None = None) -> pl.DataFrame:
    """The log's predictions in insertion order; with `limit`, only the latest `limit`."""
    query = sa.select(log.table).order_by(log.table.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    engine = sa.create_engine(log.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            rows = [tuple(row) for row in connection.execute(query)]
    finally:
        engine.dispose()
    rows.reverse()
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def logged_count(log: PredictionLog) -> int:
    """How many predictions the log holds."""
    engine = sa.create_engine(log.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(sa.select(sa.func.count()).select_from(log.table)) or 0)
    finally:
        engine.dispose()
