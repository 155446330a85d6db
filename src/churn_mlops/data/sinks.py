"""Writers for streams of frames: CSV, Parquet or a SQL table, one chunk at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import sqlalchemy as sa

from churn_mlops.data.sources import CSV_SUFFIXES, PARQUET_SUFFIXES, Source, database_error
from churn_mlops.errors import SourceError
from churn_mlops.sql import create_engine, sqlite_file

Progress = Callable[[int], None]

_SQL_TYPES: dict[type[pl.DataType], type[sa.types.TypeEngine[Any]]] = {
    pl.Int64: sa.BigInteger,
    pl.Float64: sa.Float,
    pl.Boolean: sa.Boolean,
    pl.String: sa.Text,
}


def write_frames(
    frames: Iterable[pl.DataFrame],
    target: Source,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> int:
    """Write every frame to a CSV file, a Parquet file or a SQL table; return the row count."""
    if target.is_sql:
        return _write_sql(frames, target, overwrite, progress)
    path = Path(target.location)
    if path.exists() and not overwrite:
        raise SourceError(f"{path}: already exists (pass --force to replace it)")
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES | PARQUET_SUFFIXES:
        raise SourceError(f"{path}: unknown file type (use .csv or .parquet)")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = _write_csv if suffix in CSV_SUFFIXES else _write_parquet
    return writer(frames, path, progress)


def _write_csv(frames: Iterable[pl.DataFrame], path: Path, progress: Progress | None) -> int:
    rows = 0
    with path.open("wb") as file:
        for frame in frames:
            frame.write_csv(file, include_header=rows == 0)
            rows += _advance(frame, progress)
    return rows


def _write_parquet(frames: Iterable[pl.DataFrame], path: Path, progress: Progress | None) -> int:
    rows, writer = 0, None
    try:
        for frame in frames:
            table = frame.to_arrow()
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            rows += _advance(frame, progress)
    finally:
        if writer is not None:
            writer.close()
    return rows


def _write_sql(
    frames: Iterable[pl.DataFrame], target: Source, overwrite: bool, progress: Progress | None
) -> int:
    if not target.table:
        raise SourceError(f"{target.location}: writing to a database needs a table name")
    engine = create_engine(target.location)
    database = sqlite_file(engine)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    rows, table = 0, None
    try:
        with engine.begin() as connection:
            for frame in frames:
                table = table if table is not None else _table(connection, target.table, frame, overwrite)
                connection.execute(table.insert(), frame.to_dicts())
                rows += _advance(frame, progress)
    except sa.exc.SQLAlchemyError as exc:
        raise database_error(target, exc) from exc
    finally:
        engine.dispose()
    return rows


def _table(connection: sa.Connection, name: str, frame: pl.DataFrame, replace: bool) -> sa.Table:
    columns = [sa.Column(c, _SQL_TYPES.get(type(t), sa.Text)()) for c, t in frame.schema.items()]
    table = sa.Table(name, sa.MetaData(), *columns)
    exists = sa.inspect(connection).has_table(name)
    if exists and replace:
        table.drop(connection)
    elif exists:
        raise SourceError(f"table {name} already exists (pass --force to replace it)")
    table.create(connection, checkfirst=True)
    return table


def _advance(frame: pl.DataFrame, progress: Progress | None) -> int:
    if progress is not None:
        progress(frame.height)
    return frame.height
