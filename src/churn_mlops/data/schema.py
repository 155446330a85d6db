"""The pandera schema of a canonical churn table, derived from the dataset spec."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from churn_mlops.data.spec import ColumnSpec, DatasetSpec, Kind
from churn_mlops.data.timestamps import TIMESTAMP


def pandera_schema(
    spec: DatasetSpec, *, with_target: bool, times: tuple[str, ...] = ()
) -> pa.DataFrameSchema:
    """Row-level rules for normalised data: types, nullability, categories and ranges.

    `times` names the timestamp columns the data has (a snapshot or label time is never blank).
    """
    columns = {spec.id.name: pa.Column(pl.String, nullable=False)}
    columns |= {name: pa.Column(TIMESTAMP, nullable=False) for name in times}
    columns |= {f.name: _column(f) for f in spec.features}
    if with_target:
        columns[spec.target.name] = pa.Column(pl.Boolean, nullable=False)
    return pa.DataFrameSchema(columns, name=spec.name, strict=False)


def polars_dtype(column: ColumnSpec) -> type[pl.DataType]:
    """The polars type a normalised feature column has."""
    if column.type is Kind.NUMERIC:
        return pl.Int64 if column.integer else pl.Float64
    return pl.Boolean if column.type is Kind.BOOLEAN else pl.String


def _column(column: ColumnSpec) -> pa.Column:
    return pa.Column(polars_dtype(column), checks=_checks(column), nullable=column.nullable)


def _checks(column: ColumnSpec) -> list[pa.Check]:
    if column.categories:
        return [pa.Check.isin(list(column.categories))]
    if column.min is not None and column.max is not None:
        return [pa.Check.in_range(column.min, column.max)]
    if column.min is not None:
        return [pa.Check.ge(column.min)]
    if column.max is not None:
        return [pa.Check.le(column.max)]
    return []
