"""One reader for customer data: CSV files, Parquet files or folders, SQL tables or queries.

A source is a path or a SQLAlchemy URL; SQL sources also take a table or a query. CSV is read
as text and left to normalisation, so a quirky value becomes a quarantined row, not a crash.
With `recover`, a CSV record that cannot be decoded or parsed becomes a row marked in the
`_malformed` column (see `csv_recovery.py`) instead of failing the whole file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.dataset as ds
import sqlalchemy as sa

from churn_mlops.data.csv_recovery import recovered_batches
from churn_mlops.errors import SourceError, first_line
from churn_mlops.sql import create_engine, sqlite_file

CSV_SUFFIXES = {".csv", ".txt", ".tsv"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
_RECOVERY_BATCH_ROWS = 100_000
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+]*://")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


@dataclass(frozen=True)
class Source:
    """Where customer data comes from: a file path or a database URL with a table or query."""

    location: str
    table: str | None = None
    query: str | None = None

    @property
    def is_sql(self) -> bool:
        """Whether the location is a database URL."""
        return bool(_URL.match(self.location))

    def describe(self) -> str:
        """A printable name, with any password in the URL hidden."""
        if not self.is_sql:
            return self.location
        url = sa.make_url(self.location).render_as_string(hide_password=True)
        if self.query:
            return f"{url} (query)"
        return f"{url} (table {self.table})" if self.table else url


def read_source(source: Source, *, recover: bool = False) -> pl.DataFrame:
    """Read a whole source into a frame, raising SourceError with the location on failure."""
    if source.is_sql:
        return _read_sql(source)
    path = Path(source.location)
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES:
        return _read_parquet(path)
    if path.suffix.lower() in CSV_SUFFIXES:
        return _read_csv(path, recover=recover)
    raise SourceError(f"{path}: unknown file type (use .csv, .parquet or a folder of Parquet files)")


def iter_source(source: Source, batch_rows: int, *, recover: bool = False) -> Iterator[pl.DataFrame]:
    """Stream a source in frames of at most batch_rows rows, so memory stays bounded."""
    if source.is_sql:
        yield from _iter_sql(source, batch_rows)
        return
    path = Path(source.location)
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES:
        yield from _iter_parquet(path, batch_rows)
        return
    if path.suffix.lower() not in CSV_SUFFIXES:
        raise SourceError(f"{path}: unknown file type (use .csv, .parquet or a folder of Parquet files)")
    if recover:
        yield from _iter_csv_recovering(path, batch_rows)
        return
    try:
        yield from pl.scan_csv(path, infer_schema=False, separator=_separator(path)).collect_batches(
            chunk_size=batch_rows
        )
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read as CSV ({first_line(exc)})") from exc


def _iter_parquet(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Parquet one slice of rows at a time, each its own query.

    Polars then decodes only the pages a slice needs, where its streaming reader decodes row
    groups ahead (a few hundred MB on a million-row file). The first file's columns are the
    table's, as `read_source` takes them: a later file's extra columns are left out, its missing
    ones are null.
    """
    lazy = pl.scan_parquet(parquet_files(path), missing_columns="insert", extra_columns="ignore")
    try:
        rows = lazy.select(pl.len()).collect().item()
        for start in range(0, rows, batch_rows):
            yield lazy.slice(start, batch_rows).collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise SourceError(f"{path}: cannot read as Parquet ({first_line(exc)})") from exc


def _iter_csv_recovering(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Polars' batches while they are clean; from the first doubtful one on, the line-level reader's."""
    separator, done = _separator(path), 0
    batches = pl.scan_csv(path, infer_schema=False, separator=separator).collect_batches(
        chunk_size=batch_rows
    )
    try:
        for batch in batches:
            if _may_hold_short_rows(batch):
                break
            yield batch
            done += batch.height
        else:
            return
    except pl.exceptions.ComputeError:
        pass  # a record polars cannot decode or parse: read on line by line
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise SourceError(f"{path}: cannot read as CSV ({first_line(exc)})") from exc
    yield from recovered_batches(path, separator, batch_rows, skip=done)


def database_error(source: Source, exc: sa.exc.SQLAlchemyError) -> SourceError:
    """A driver error as a one-line SourceError naming the source."""
    return SourceError(f"{source.describe()}: {first_line(getattr(exc, 'orig', None) or exc)}")


def _read_csv(path: Path, *, recover: bool) -> pl.DataFrame:
    separator = _separator(path)
    try:
        frame = pl.read_csv(path, infer_schema=False, separator=separator)
    except pl.exceptions.ComputeError as exc:
        if not recover:
            raise SourceError(f"{path}: cannot read as CSV ({first_line(exc)})") from exc
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read as CSV ({first_line(exc)})") from exc
    else:
        if not (recover and _may_hold_short_rows(frame)):
            return frame
    return pl.concat(recovered_batches(path, separator, _RECOVERY_BATCH_ROWS))


def _may_hold_short_rows(frame: pl.DataFrame) -> bool:
    """Whether polars may have padded a record with too few fields: it leaves the last column null."""
    return frame.width > 0 and frame.get_column(frame.columns[-1]).null_count() > 0


def _separator(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def parquet_files(path: Path) -> list[str]:
    """The Parquet files of a path: itself, or every Parquet file below a folder, sorted."""
    if not path.is_dir():
        return [str(path)]
    files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in PARQUET_SUFFIXES)
    if not files:
        raise SourceError(f"{path}: no Parquet files in this folder")
    return files


def _read_parquet(path: Path) -> pl.DataFrame:
    files = parquet_files(path)
    try:
        dataset = ds.dataset(files, format="parquet")
        frame = pl.from_arrow(dataset.to_table())
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        raise SourceError(f"{path}: cannot read as Parquet ({first_line(exc)})") from exc
    assert isinstance(frame, pl.DataFrame)
    return frame


def _reading_engine(source: Source) -> sa.Engine:
    """An engine for reading; a SQLite file must already exist (SQLite would create it)."""
    engine = create_engine(source.location)
    database = sqlite_file(engine)
    if database is not None and not database.exists():
        raise SourceError(f"{database}: no such SQLite database file")
    return engine


def _read_sql(source: Source) -> pl.DataFrame:
    engine, statement = _reading_engine(source), _statement(source)
    try:
        with engine.connect() as connection:
            return pl.read_database(statement, connection, infer_schema_length=None)
    except sa.exc.SQLAlchemyError as exc:
        raise database_error(source, exc) from exc
    finally:
        engine.dispose()


def _iter_sql(source: Source, batch_rows: int) -> Iterator[pl.DataFrame]:
    engine, statement = _reading_engine(source), _statement(source)
    try:
        with engine.connect() as connection:
            batches = pl.read_database(
                statement, connection, iter_batches=True, batch_size=batch_rows, infer_schema_length=None
            )
            yield from batches
    except sa.exc.SQLAlchemyError as exc:
        raise database_error(source, exc) from exc
    finally:
        engine.dispose()


def _statement(source: Source) -> sa.TextClause:
    if source.query and source.table:
        raise SourceError("give either a table or a query, not both")
    if source.query:
        return sa.text(source.query)
    if not source.table:
        raise SourceError(f"{source.describe()}: a database source needs a table or a query")
    if not _IDENTIFIER.match(source.table):
        raise SourceError(f"{source.table!r}: not a valid table name (use a query instead)")
    return sa.text(f"SELECT * FROM {source.table}")
