"""Process tuning, in one place: OpenMP waits, scoring threads, the heap, logging and scheduling.

Each switch trades a default made for general programs for one that suits a long-running
server on a small machine; each says why where it is applied.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def passive_openmp_waits() -> None:
    """Make idle OpenMP threads sleep rather than spin (set before LightGBM's library loads).

    LightGBM's OpenMP threads spin while idle by default; on a small shared machine that starves
    every other process, and itself.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def one_scoring_thread(load: Callable[[str], tuple[Any, Any]]) -> Callable[[str], tuple[Any, Any]]:
    """A loader whose predictors score on one thread.

    A request is a few rows and each worker process has its core; OpenMP threads would only add
    wake-up latency.
    """

    def single(alias: str) -> tuple[Any, Any]:
        info, predictor = load(alias)
        return info, predictor.with_threads(1)

    return single


def freeze_heap() -> None:
    """Move everything alive now out of the garbage collector's sight.

    A server holds over a hundred thousand long-lived objects (modules, the app, the model);
    a full collection walking them stalls the event loop every few seconds. No collection runs
    first: at start-up it finds next to no garbage and would take about 80 ms walking the rest.
    """
    gc.freeze()


def lean_log_records() -> None:
    """Make log records skip finding their thread, process and source location.

    The JSON lines carry none of them (the logging HOWTO's "Optimization" switches), and every
    request writes an access line. `logging._srcfile` is the one private name used here.
    """
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None


def run_as_batch() -> None:
    """Schedule the calling thread as a batch job (Linux's SCHED_BATCH).

    Such a thread never preempts a thread that wakes up, and keeps its fair share of the CPU.
    Elsewhere, or where the system refuses, the thread keeps its policy.
    """
    if sys.platform != "linux":
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # 0: the calling thread
    except OSError as exc:
        logger.debug("thread keeps its scheduling policy: %s", exc)
