"""The local batch engine: stream the source in Arrow batches, score, write, never hold it all.

Reading the next batch overlaps with scoring the current one (a reader thread), and LightGBM
scores with both cores, so the run is bounded by the slower of the two, in bounded memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from churn_mlops.batch.output import ScoreWriter
from churn_mlops.batch.scoring import ScoredBatch, ScoringContext, score_batch
from churn_mlops.batch.summary import RunTotals
from churn_mlops.data.sources import Source, iter_source
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import DataValidationError

Advance = Callable[[int], None]


def run_local(
    source: Source,
    writer: ScoreWriter,
    context: ScoringContext,
    *,
    batch_rows: int,
    totals: RunTotals,
    quarantine: QuarantineWriter,
    advance: Advance = lambda n: None,
) -> float:
    """Score every batch of the source into the writer; return the seconds it took."""
    started = time.perf_counter()
    drain(_scored(source, context, batch_rows, advance), writer, quarantine, totals, context.spec)
    return time.perf_counter() - started


def drain(
    batches: Iterable[ScoredBatch],
    writer: ScoreWriter,
    quarantine: QuarantineWriter,
    totals: RunTotals,
    spec: DatasetSpec,
) -> None:
    """Write every scored batch, check the run's totals, commit both outputs; on failure abort both."""
    iterator = iter(batches)
    try:
        for scored in iterator:
            writer.write(scored.scores)
            quarantine.write(scored.quarantine)
            totals.add(scored.scores, scored.quarantine.height, scored.rows_in, scored.profile)
        check_totals(totals, spec.max_quarantine_fraction)
        writer.commit()
    except BaseException:
        writer.abort()
        quarantine.abort()
        raise
    finally:
        if isinstance(iterator, Generator):
            iterator.close()
    quarantine.commit()


def _scored(
    source: Source, context: ScoringContext, batch_rows: int, advance: Advance
) -> Iterator[ScoredBatch]:
    first_row = 1
    for raw in _read_ahead(iter_source(source, batch_rows)):
        yield score_batch(raw, context, first_row=first_row)
        first_row += raw.height
        advance(raw.height)


def check_totals(totals: RunTotals, max_quarantine_fraction: float) -> None:
    """Table-level checks over the whole input: rows at all, and not mostly bad rows."""
    if totals.rows_in == 0:
        raise DataValidationError("the input has no rows")
    if totals.rows_quarantined > max_quarantine_fraction * totals.rows_in:
        raise DataValidationError(
            f"{totals.rows_quarantined} of {totals.rows_in} rows failed validation; the input does not "
            "match the dataset spec (see the quarantine file)"
        )
    if totals.rows_scored == 0:
        raise DataValidationError("no valid rows to score (see the quarantine file)")


def _read_ahead(batches: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """Yield batches while the next one is being read on another thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-reader") as pool:
        pending = pool.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = pool.submit(next, batches, None)
            yield batch


class QuarantineWriter:
    """Streams quarantined rows (all text, plus reasons) to one Parquet file, if there are any."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: pq.ParquetWriter | None = None

    def write(self, frame: pl.DataFrame) -> None:
        """Add quarantined rows."""
        if frame.height == 0:
            return
        table = frame.to_arrow()
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table.cast(self._writer.schema))

    def commit(self) -> None:
        """Close the file."""
        if self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        """Close the file; quarantined rows of a failed run are kept for inspection."""
        self.commit()

    @property
    def written(self) -> Path | None:
        """The quarantine file, if any row was quarantined."""
        return self.path if self._writer is not None else None
