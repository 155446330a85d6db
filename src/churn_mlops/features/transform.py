"""The one feature transform: canonical columns to a float64 matrix, vectorised over columns.

The same function serves one API request, a million-row batch and a Spark partition. Columns
come as Arrow arrays (frames, Parquet, Spark) or as plain sequences (a request's values);
each step is element-wise, so a row's features never depend on the other rows in the call.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from churn_mlops.data.spec import DerivedSpec
from churn_mlops.errors import DataValidationError
from churn_mlops.features.spec import FeatureSpec

Column: TypeAlias = Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray
Columns: TypeAlias = pl.DataFrame | pa.Table | pa.RecordBatch | Mapping[str, Column]


def transform(data: Columns, spec: FeatureSpec) -> np.ndarray:
    """The model matrix (rows x spec.feature_names) for canonical columns of any length."""
    typed = _typed_columns(data, spec) if isinstance(data, pl.DataFrame) else {}
    columns = _arrow_columns(data, [n for n in spec.input_columns if n not in typed])
    names = spec.feature_names
    rows = data.height if isinstance(data, pl.DataFrame) else len(columns[names[0]])
    matrix = np.empty((rows, len(names)), dtype=np.float64, order="F")  # column-wise fill is cache-friendly
    position = {name: index for index, name in enumerate(names)}
    for f in spec.numeric:
        column = typed.get(f.name)
        matrix[:, position[f.name]] = column if column is not None else _numbers(columns[f.name], f.fill)
    for c in spec.categorical:
        column = typed.get(c.name)
        matrix[:, position[c.name]] = column if column is not None else _codes(columns[c.name], c.vocabulary)
    values = {name: matrix[:, position[name]] for name in spec.input_columns}  # views, not copies
    vocabularies = {f.name: f.vocabulary for f in spec.categorical}
    for d in spec.derived:
        matrix[:, position[d.name]] = _derived(d, values, vocabularies)
    return matrix


def _typed_columns(frame: pl.DataFrame, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """A frame's number, boolean and text columns as `_numbers` and `_codes` give them, by polars
    (cheaper than through Arrow); other types are left to those two."""
    schema = frame.schema
    numeric = [f for f in spec.numeric if f.name in schema and _is_number(schema[f.name])]
    whole = {f.name: frame.get_column(f.name).to_numpy() for f in numeric if _complete(frame, f.name)}
    gaps = [f for f in numeric if f.name not in whole]
    numbers = [pl.col(f.name).cast(pl.Float64).fill_null(f.fill).fill_nan(f.fill) for f in gaps]
    codes = [_code(c.name, c.vocabulary) for c in spec.categorical if schema.get(c.name) == pl.String]
    typed = frame.select(*numbers, *codes)
    return whole | {name: typed.get_column(name).to_numpy() for name in typed.columns}


def _complete(frame: pl.DataFrame, name: str) -> bool:
    """Whether a column has no gap to fill: no null, and no NaN (integers and booleans have none)."""
    column = frame.get_column(name)
    return column.null_count() == 0 and not (column.dtype.is_float() and bool(column.is_nan().any()))


def _is_number(dtype: pl.DataType) -> bool:
    return dtype.is_integer() or dtype.is_float() or dtype == pl.Boolean


def _code(name: str, vocabulary: tuple[str, ...]) -> pl.Expr:
    """A text column's position in the vocabulary (the first, if repeated); null where not in it."""
    if not vocabulary:
        return pl.lit(None, dtype=pl.Float64).alias(name)
    column = pl.col(name)
    return pl.coalesce(
        pl.when(column == value).then(float(index)) for index, value in enumerate(vocabulary)
    ).alias(name)


def _arrow_columns(data: Columns, names: Sequence[str]) -> dict[str, Column]:
    if isinstance(data, pl.DataFrame):
        data = data.select([n for n in names if n in data.columns]).to_arrow()
    if isinstance(data, pa.Table | pa.RecordBatch):
        present = set(data.schema.names)
        columns: dict[str, Column] = {n: data.column(n) for n in names if n in present}
    else:
        columns = {n: data[n] for n in names if n in data}
    missing = [n for n in names if n not in columns]
    if missing:
        raise DataValidationError(f"missing feature columns: {', '.join(missing)}")
    return columns


def _numbers(column: Column, fill: float) -> np.ndarray:
    """Float64 values with nulls filled; booleans as 0/1."""
    if isinstance(column, pa.Array | pa.ChunkedArray):
        if not pa.types.is_float64(column.type):
            column = pc.cast(column, pa.float64())
        column = column.to_numpy(zero_copy_only=False)
    values = np.asarray(column, dtype=np.float64)  # None becomes NaN
    return np.where(np.isnan(values), fill, values)


def _codes(column: Column, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Category codes in vocabulary order; unknown and missing categories become NaN."""
    if isinstance(column, pa.Array | pa.ChunkedArray):
        codes = pc.index_in(column, value_set=_value_set(vocabulary, column.type))
        return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.float64)
    lookup = _lookup(vocabulary)
    return np.fromiter((lookup.get(v, np.nan) for v in column), dtype=np.float64, count=len(column))


@functools.lru_cache(maxsize=256)
def _lookup(vocabulary: tuple[str, ...]) -> dict[object, float]:
    return {value: float(code) for code, value in enumerate(vocabulary)}


@functools.lru_cache(maxsize=256)
def _value_set(vocabulary: tuple[str, ...], dtype: pa.DataType) -> pa.Array:
    text = dtype if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) else pa.string()
    return pa.array(vocabulary, text)


def _derived(
    derived: DerivedSpec, values: Mapping[str, np.ndarray], vocabularies: Mapping[str, tuple[str, ...]]
) -> np.ndarray:
    if derived.type == "ratio":
        denominator = np.maximum(values[str(derived.denominator)], derived.min_denominator)
        return np.asarray(values[str(derived.numerator)] / denominator, dtype=np.float64)
    total = np.zeros(len(values[derived.columns[0]]))
    for name in derived.columns:
        if name not in vocabularies:
            total += values[name]
        elif derived.value in vocabularies[name]:
            total += values[name] == vocabularies[name].index(derived.value)
    return total
