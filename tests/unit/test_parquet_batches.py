"""Streaming a Parquet source in slices of rows: the same table as reading it whole."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from churn_mlops.data.sources import Source, iter_source, read_source
from churn_mlops.errors import SourceError
from tests.factories import raw_customers


@pytest.fixture
def customers() -> pl.DataFrame:
    return raw_customers(2_500, seed=3)


def test_parquet_comes_in_slices_of_batch_rows_across_row_groups(
    customers: pl.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "customers.parquet"
    customers.write_parquet(path, row_group_size=700)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    frames = list(iter_source(Source(str(path)), 1_000))
    assert [f.height for f in frames] == [1_000, 1_000, 500]
    assert pl.concat(frames).equals(pl.read_parquet(path))
    assert all(f.schema == customers.schema for f in frames)


def test_a_folder_of_parquet_files_streams_as_one_table_in_file_order(
    customers: pl.DataFrame, tmp_path: Path
) -> None:
    folder = tmp_path / "customers"
    (folder / "part=2").mkdir(parents=True)
    customers.head(1_200).write_parquet(folder / "a.parquet")
    customers.tail(1_300).write_parquet(folder / "part=2" / "b.parquet")
    frames = list(iter_source(Source(str(folder)), 1_000))
    assert [f.height for f in frames] == [1_000, 1_000, 500]
    assert pl.concat(frames).equals(customers)


def test_files_with_other_columns_stream_as_the_whole_read_takes_them(
    customers: pl.DataFrame, tmp_path: Path
) -> None:
    """The first file's columns make the table: a later file's extra column is left out and the
    column it lacks is null, in the stream as in `read_source`."""
    folder = tmp_path / "customers"
    folder.mkdir()
    customers.head(1_200).write_parquet(folder / "a.parquet")
    later = customers.tail(1_300).drop("gender").with_columns(pl.lit("x").alias("crm_segment"))
    later.write_parquet(folder / "b.parquet")
    streamed = pl.concat(iter_source(Source(str(folder)), 1_000))
    assert streamed.equals(read_source(Source(str(folder))))
    assert streamed.columns == customers.columns
    assert streamed.get_column("gender").null_count() == 1_300


def test_a_file_that_is_not_parquet_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "customers.parquet"
    path.write_text("customer_id,tenure\nA,1\n")
    with pytest.raises(SourceError, match="cannot read as Parquet"):
        list(iter_source(Source(str(path)), 1_000))
