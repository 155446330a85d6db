"""How the local engine reads its source: in frames of at most batch_rows rows, in bounded memory.

Parquet is read one slice of rows at a time, each its own query: polars decodes only the pages
that slice needs, where its streaming reader decodes row groups ahead (a few hundred MB on a
million-row file). The frames are those polars' reader gives. CSV and SQL sources go through
`iter_source`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from churn_mlops.data.sources import PARQUET_SUFFIXES, Source, iter_source, parquet_files
from churn_mlops.errors import SourceError, first_line


def stream(source: Source, batch_rows: int) -> Iterator[pl.DataFrame]:
    """The source's rows in frames of at most batch_rows rows (malformed CSV records marked)."""
    path = Path(source.location)
    if source.is_sql or not (path.is_dir() or (path.is_file() and path.suffix.lower() in PARQUET_SUFFIXES)):
        yield from iter_source(source, batch_rows, recover=True)
        return
    lazy = pl.scan_parquet(parquet_files(path))
    try:
        rows = lazy.select(pl.len()).collect().item()
        for start in range(0, rows, batch_rows):
            yield lazy.slice(start, batch_rows).collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise SourceError(f"{path}: cannot read as Parquet ({first_line(exc)})") from exc
