"""Factories for small, valid raw customer frames in the Telco schema."""

from __future__ import annotations

import numpy as np
import polars as pl

from churn_mlops.data.synthetic import customers


def raw_customers(n: int = 50, *, seed: int = 7) -> pl.DataFrame:
    """n valid customers with raw Telco column names, every value as text (as a CSV reads)."""
    frame = customers(np.random.default_rng(seed), n, start=0, seed=seed, drift=0.0)
    return frame.with_columns(pl.all().cast(pl.String).fill_null(" "))


def with_value(frame: pl.DataFrame, row: int, column: str, value: str | None) -> pl.DataFrame:
    """A copy of frame with one cell (0-based row) replaced."""
    index = pl.int_range(pl.len()) == row
    return frame.with_columns(pl.when(index).then(pl.lit(value)).otherwise(pl.col(column)).alias(column))
