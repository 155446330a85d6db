"""The local batch engine: stream the source in Arrow batches, score, write, never hold it all.

Reading the next batch overlaps with scoring the current one (a reader thread), and the trees
(compiled to native code where `batch.compiled` allows, else LightGBM) score with all of the
batch's threads, so the run is bounded by the slower of the two, in bounded memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import polars as pl

from churn_mlops.batch.drain import QuarantineWriter, drain
from churn_mlops.batch.output import ScoreWriter
from churn_mlops.batch.scoring import ScoredBatch, ScoringContext, score_batch
from churn_mlops.batch.summary import RunTotals
from churn_mlops.data.sources import Source, iter_source

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


def _scored(
    source: Source, context: ScoringContext, batch_rows: int, advance: Advance
) -> Iterator[ScoredBatch]:
    first_row = 1
    for raw in _read_ahead(iter_source(source, batch_rows, recover=True)):
        yield score_batch(raw, context, first_row=first_row)
        first_row += raw.height
        advance(raw.height)


def _read_ahead(batches: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """Yield batches while the next one is being read on another thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-reader") as pool:
        pending = pool.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = pool.submit(next, batches, None)
            yield batch
