"""The writer thread: commits the batches handed to it, several at a time, and wakes their waiters."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Final, TypeAlias

import sqlalchemy as sa

from churn_mlops.errors import first_line
from churn_mlops.serving.predlog.batch import Batch, Waiter, failure
from churn_mlops.serving.predlog.table import PredictionLogError, Row, discard

logger = logging.getLogger("churn_mlops.serving.predlog")

MAX_COMMIT_ROWS: Final = 1024  # the writer joins waiting batches into one transaction up to this

Commit: TypeAlias = Callable[[sa.Connection, list[Row]], None]
Answer: TypeAlias = Callable[[list[Waiter], PredictionLogError | None], None]


class Writer(threading.Thread):
    """Takes batches from `batches` until a None, commits them with `commit`, reports to `answer`.

    It waits for locks and survives failed commits: any failure reaches the waiters of that
    commit, its connection is replaced, and the next batch goes on a fresh one.
    """

    def __init__(
        self, engine: sa.Engine, batches: queue.SimpleQueue[Batch | None], commit: Commit, answer: Answer
    ) -> None:
        super().__init__(name="prediction-log-writer", daemon=True)
        self.engine = engine
        self.batches = batches
        self.commit = commit
        self.answer = answer

    def run(self) -> None:
        """Take the batches handed over, commit them, wake their waiters."""
        connection: sa.Connection | None = None
        stop = False
        while not stop:
            rows, waiters, stop = self._collect()
            if not rows:
                continue
            try:
                if connection is None:
                    connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                self.commit(connection, rows)
            except Exception as exc:  # any failure must reach the waiters, and the writer must live on
                logger.warning("prediction log: %d writes failed: %s", len(rows), first_line(exc))
                discard(connection)
                connection = None
                self.answer(waiters, failure(f"prediction log commit failed: {first_line(exc)}", exc))
            else:
                self.answer(waiters, None)
        discard(connection)

    def _collect(self) -> tuple[list[Row], list[Waiter], bool]:
        """Block for a batch, then join any others already handed over, up to MAX_COMMIT_ROWS rows."""
        batch = self.batches.get()
        if batch is None:
            return [], [], True
        rows, waiters = batch.rows, list(batch.waiters)  # the batch's own list stays its own (`expire`)
        while len(rows) < MAX_COMMIT_ROWS:
            try:
                batch = self.batches.get_nowait()
            except queue.Empty:
                break
            if batch is None:
                return rows, waiters, True
            rows += batch.rows
            waiters += batch.waiters
        return rows, waiters, False
