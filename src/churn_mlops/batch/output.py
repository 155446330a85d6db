"""Where scores go: a Parquet file, a folder partitioned by run date, or a SQL table.

Every target is replaced per run date, never appended twice: a file is written in a hidden
staging folder beside the output and renamed into place, a partition's file likewise, and a
table's rows for the run date are deleted and inserted in one transaction. A failed or killed
run leaves the previous output intact; the next run of the output removes its temporary file.

A folder is a Hive-partitioned dataset: `run_date=YYYY-MM-DD/scores.parquet`, the run date held
by the partition key only, so pyarrow, polars and Spark read the folder with `run_date` as a column.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Protocol

import polars as pl
import pyarrow.parquet as pq
import sqlalchemy as sa

from churn_mlops.batch.staging import claim_file, staging_folder, sweep
from churn_mlops.data.sources import Source, database_error
from churn_mlops.errors import SourceError
from churn_mlops.sql import create_engine

PARTITION_KEY = "run_date"


class ScoreWriter(Protocol):
    """Receives scored batches; nothing is visible until commit."""

    location: str

    def write(self, scores: pl.DataFrame) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


def open_writer(target: Source, run_date: date) -> ScoreWriter:
    """A writer for a .parquet file, a folder (partitioned by run date) or a database table."""
    if target.is_sql:
        return SqlWriter(target, run_date)
    path = Path(target.location)
    if path.suffix.lower() in {".parquet", ".pq"}:
        return ParquetWriter(path, staging_folder(path))
    if path.suffix:
        raise SourceError(f"{path}: write scores to a .parquet file, a folder or a database table")
    partition = path / f"{PARTITION_KEY}={run_date.isoformat()}" / "scores.parquet"
    return ParquetWriter(partition, staging_folder(path), drop=PARTITION_KEY)


class ParquetWriter:
    """Streams batches into a locked file in the staging folder and renames it over the target."""

    def __init__(self, path: Path, staging: Path, drop: str | None = None) -> None:
        self.path, self._drop = path, drop
        self.location = str(path)
        sweep(staging)
        self._staged = claim_file(staging, prefix=f"{path.name}.")
        self._writer: pq.ParquetWriter | None = None

    def write(self, scores: pl.DataFrame) -> None:
        """Append one batch."""
        frame = scores.drop(self._drop) if self._drop else scores
        table = frame.to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self._staged.path, table.schema, use_dictionary=_repetitive(frame)
            )
        self._writer.write_table(table)

    def commit(self) -> None:
        """Close the file and move it over the target."""
        if self._writer is None:
            raise SourceError("no rows were scored, so no output was written")
        self._writer.close()
        self._staged.commit_to(self.path)

    def abort(self) -> None:
        """Drop what was written; the previous output stays. Aborting twice is harmless."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._staged.discard()


def _repetitive(frame: pl.DataFrame) -> list[str]:
    """Columns worth dictionary-encoding: few distinct values (ids and scores are not; trying costs time)."""
    return [name for name in frame.columns if frame.get_column(name).n_unique() <= max(1, frame.height // 10)]


class SqlWriter:
    """Replaces the run date's rows of a table inside one transaction."""

    def __init__(self, target: Source, run_date: date) -> None:
        if not target.table:
            raise SourceError(f"{target.describe()}: scores to a database need --output-table")
        self.target, self.run_date = target, run_date
        self.location = target.describe()
        self.engine = create_engine(target.location)
        self._connection: sa.Connection | None = None
        self._transaction: sa.RootTransaction | None = None
        self._table: sa.Table | None = None

    def write(self, scores: pl.DataFrame) -> None:
        """Insert one batch (inside the run's transaction)."""
        try:
            connection = self._begin(scores)
            assert self._table is not None
            connection.execute(self._table.insert(), scores.to_dicts())
        except sa.exc.SQLAlchemyError as exc:
            self.abort()
            raise database_error(self.target, exc) from exc

    def commit(self) -> None:
        """Make the run's rows visible, replacing any earlier run of the same date."""
        if self._transaction is None:
            raise SourceError("no rows were scored, so no output was written")
        self._transaction.commit()
        self._close()

    def abort(self) -> None:
        """Roll back; the table keeps its previous rows."""
        if self._transaction is not None and self._transaction.is_active:
            self._transaction.rollback()
        self._close()

    def _begin(self, scores: pl.DataFrame) -> sa.Connection:
        if self._connection is not None:
            return self._connection
        self._connection = self.engine.connect()
        self._transaction = self._connection.begin()
        self._table = _scores_table(str(self.target.table))
        self._table.create(self._connection, checkfirst=True)
        self._connection.execute(self._table.delete().where(self._table.c.run_date == self.run_date))
        return self._connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = self._transaction = None
        self.engine.dispose()


def _scores_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("churn_probability", sa.Float),
        sa.Column("prediction", sa.SmallInteger),
        sa.Column("risk", sa.Text),
        sa.Column("model_version", sa.Text),
        sa.Column("scored_at", sa.DateTime(timezone=True)),
        sa.Column("run_date", sa.Date, index=True),
        sa.Column("revenue_at_risk", sa.Float),
    )
