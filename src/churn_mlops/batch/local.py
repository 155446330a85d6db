"""The local batch engine: stream the source in Arrow batches, score, write, never hold it all.

The trees (compiled to native code where `batch.compiled` allows, else LightGBM) score a batch
with all of the batch's threads; then, while the current batch's output columns, profile and
rows are written, the next batch is read, validated and turned into features on another thread,
in bounded memory.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import polars as pl

from churn_mlops.batch.drain import QuarantineWriter, drain
from churn_mlops.batch.output import ScoreWriter
from churn_mlops.batch.scoring import (
    CheckedBatch,
    ScoredBatch,
    ScoringContext,
    check_batch,
    finish_batch,
    predict_checked,
)
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
    """Score batch after batch; the next one is read, validated and transformed on another thread meanwhile.

    The next batch starts once the trees have scored the current one: the trees use every core,
    and another thread taking one of them would leave the trees' other threads waiting for it.
    """
    checked = _checked(iter_source(source, batch_rows, recover=True), context)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-reader") as pool:
        pending = pool.submit(next, checked, None)
        while (batch := pending.result()) is not None:
            probabilities, decisions = predict_checked(batch, context)
            batch = dataclasses.replace(batch, matrix=None)  # free it before the next one is built
            pending = pool.submit(next, checked, None)
            yield finish_batch(batch, probabilities, decisions, context)
            advance(batch.rows_in)


def _checked(batches: Iterator[pl.DataFrame], context: ScoringContext) -> Iterator[CheckedBatch]:
    first_row = 1
    for raw in batches:
        yield check_batch(raw, context, first_row=first_row)
        first_row += raw.height
