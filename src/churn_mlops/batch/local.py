"""The local batch engine: stream the source in batches, score, write, never hold it all.

The trees (compiled to native code where `batch.compiled` allows, else LightGBM) score a batch
with all of the batch's threads. On LightGBM, while the current batch's output columns, profile
and rows are written, the next batch is read, validated and turned into features on another
thread. On compiled trees three batches are in hand at once: one read and validated, one
transformed and scored, one profiled and written. Memory stays bounded either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import numpy as np
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
    validate_batch,
    with_matrix,
)
from churn_mlops.batch.summary import RunTotals
from churn_mlops.data.sources import Source, iter_source
from churn_mlops.models.compiled import COMPILED, scorer_name

Advance = Callable[[int], None]
Predicted = tuple[CheckedBatch, np.ndarray, np.ndarray]  # a batch, its probabilities and decisions


class Check(Protocol):
    """`check_batch` or `validate_batch`."""

    def __call__(self, raw: pl.DataFrame, context: ScoringContext, *, first_row: int = 1) -> CheckedBatch: ...


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
    """Score batch after batch, the next one read and validated on another thread meanwhile."""
    batches = iter_source(source, batch_rows, recover=True)
    if scorer_name(context.predictor) == COMPILED:
        yield from _overlapped(_checked(batches, context, validate_batch), context, advance)
    else:
        yield from _in_turn(_checked(batches, context, check_batch), context, advance)


def _in_turn(
    checked: Iterator[CheckedBatch], context: ScoringContext, advance: Advance
) -> Iterator[ScoredBatch]:
    """The next batch is read, validated and transformed once the trees have scored the current
    one: LightGBM's OpenMP threads use every core, and wait for any one of them that another
    thread delays."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-reader") as pool:
        pending = pool.submit(next, checked, None)
        while (batch := pending.result()) is not None:
            probabilities, decisions = predict_checked(batch, context)
            pending = pool.submit(next, checked, None)
            yield finish_batch(batch, probabilities, decisions, context)
            advance(batch.rows_in)


def _overlapped(
    validated: Iterator[CheckedBatch], context: ScoringContext, advance: Advance
) -> Iterator[ScoredBatch]:
    """Three batches at once: one read and validated on the reader thread, the one before it
    transformed and scored on the scorer thread, and the one before that profiled and written here.

    Compiled trees share out their rows as their threads free up, so the other stages' threads
    cost them only the time those threads take.
    """
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-reader") as reader,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-scorer") as scorer,
    ):
        reading = reader.submit(next, validated, None)
        scoring: Future[Predicted] | None = None
        while True:
            try:
                batch = reading.result()
            except BaseException:  # the batch before the bad one is written first, as in turn
                if scoring is not None:
                    yield finish_batch(*scoring.result(), context)
                raise
            if batch is not None:
                reading = reader.submit(next, validated, None)
            predicted = scoring.result() if scoring is not None else None
            scoring = scorer.submit(_predicted, batch, context) if batch is not None else None
            if predicted is not None:
                scored = finish_batch(*predicted, context)
                yield scored
                advance(scored.rows_in)
            if scoring is None:
                return


def _predicted(batch: CheckedBatch, context: ScoringContext) -> Predicted:
    """The batch with its matrix, and the probabilities and decisions of its valid rows."""
    batch = with_matrix(batch, context)
    return (batch, *predict_checked(batch, context))


def _checked(
    batches: Iterator[pl.DataFrame], context: ScoringContext, check: Check
) -> Iterator[CheckedBatch]:
    first_row = 1
    for raw in batches:
        yield check(raw, context, first_row=first_row)
        first_row += raw.height
