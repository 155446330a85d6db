"""The SQLite log's WAL checkpoints, and the thread that runs them beside the writer.

No commit checkpoints the WAL, because that stalls every request waiting on the commit for tens
of milliseconds; this thread copies the WAL into the database instead.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Final

import sqlalchemy as sa

from churn_mlops.errors import first_line
from churn_mlops.runtime import run_as_batch

logger = logging.getLogger("churn_mlops.serving.predlog")

CHECKPOINT_SECONDS: Final = 0.25  # how often the checkpointer copies the WAL into the database
CHECKPOINT_PASSES: Final = 8  # PASSIVE checkpoints a round makes to catch up with the writer
RESTART_PAGES: Final = 1024  # 4 MiB of 4 KiB pages: the WAL size at which a round starts it over
RESTART_BUSY_MS: Final = 5  # how long that RESTART may hold off a commit or wait for a reader


def checkpoint(engine: sa.Engine, mode: str, passes: int = 1, busy_ms: int | None = None) -> int | None:
    """WAL checkpoints on a connection of their own, until the whole WAL is copied (at most
    `passes`); the WAL's size in pages after the last one (0: all of it was copied), or None if
    a checkpoint failed. PASSIVE never blocks the writer; `busy_ms` bounds how long any other
    mode waits on it or on a reader (it holds commits off meanwhile).

    A PASSIVE pass runs beside the writer and copies the WAL as it was when the pass began, so
    a pass that copied all it saw proves nothing while the next one finds more; each pass is
    shorter than the one before, and soon one finds nothing new.
    """
    try:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            if busy_ms is not None:
                cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            seen = -1
            for _ in range(passes):
                busy, frames, copied = cursor.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                if not busy and copied >= frames and (passes == 1 or frames <= seen):
                    return 0  # nothing was committed since the last pass, or the WAL started over
                seen = frames
            return max(seen, 0)
        finally:
            connection.close()
    except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:  # a later checkpoint will catch up
        logger.warning("prediction log: WAL checkpoint failed: %s", first_line(exc))
    return None


class Checkpointer:
    """A thread that copies a SQLite log's WAL into the database every `seconds`, beside the writer.

    Each round makes PASSIVE passes (see `checkpoint`), which never hold a commit up. Rounds are
    short and frequent because the requests served during one wait with its burst of copying and
    syncing.

    SQLite starts the WAL over at a commit only if a checkpoint has copied every frame before it,
    which a PASSIVE pass does not manage while commits keep coming; the WAL would then grow to
    `table.WAL_LIMIT_PAGES`, where the writer's own commit checkpoints and holds every waiting
    prediction for its fsyncs. So once the WAL holds RESTART_PAGES, a round ends with a RESTART
    checkpoint: it holds commits off while it copies the few frames the passes left and syncs (a
    few ms), and the next commit starts the WAL over. If the writer or a reader keeps it waiting
    for RESTART_BUSY_MS, it gives up until the next round.

    The thread runs as a batch job (SCHED_BATCH on Linux), so that its waking for a round, several
    milliseconds of CPU, does not preempt the event loop on the same core (docs/benchmarks.md,
    Serving); it still gets its fair share of a busy CPU, so the WAL stays bounded.
    """

    def __init__(self, engine: sa.Engine, seconds: float = CHECKPOINT_SECONDS) -> None:
        self.engine = engine
        self.seconds = seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log-checkpointer", daemon=True)

    def start(self) -> None:
        """Start the thread; its first round comes after `seconds`."""
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop after the round in progress, then leave a small WAL behind (TRUNCATE)."""
        self._stopping.set()
        self._thread.join(timeout)
        checkpoint(self.engine, "TRUNCATE")

    def _run(self) -> None:
        run_as_batch()
        while not self._stopping.wait(self.seconds):
            self.round()

    def round(self) -> None:
        """Copy the WAL into the database; start it over if it has grown to RESTART_PAGES."""
        left = checkpoint(self.engine, "PASSIVE", passes=CHECKPOINT_PASSES)
        if left is not None and left >= RESTART_PAGES:
            checkpoint(self.engine, "RESTART", busy_ms=RESTART_BUSY_MS)
