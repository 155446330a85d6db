"""Process tuning: each switch does what it says, and the private names it relies on still exist."""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading

import pytest

from churn_mlops import runtime


def test_lean_log_records_skip_the_source_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hasattr(logging, "_srcfile"), f"Python {platform.python_version()} has no logging._srcfile"
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))  # restored afterwards
    runtime.lean_log_records()
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign]
    logger = logging.getLogger("churn-runtime-test")
    logger.addHandler(handler)
    try:
        logger.warning("a line")
    finally:
        logger.removeHandler(handler)
    assert captured[0].pathname == "(unknown file)", "the source location was looked up"
    assert captured[0].thread is None
    assert captured[0].process is None


@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_BATCH is Linux's")
def test_a_batch_thread_is_scheduled_as_a_batch_job_and_the_caller_is_not() -> None:
    seen: list[int] = []

    def body() -> None:
        runtime.run_as_batch()
        seen.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [os.SCHED_BATCH]
    assert os.sched_getscheduler(0) != os.SCHED_BATCH


def test_one_scoring_thread_asks_the_predictor_for_one_thread() -> None:
    class Predictor:
        def with_threads(self, n: int) -> tuple[str, int]:
            return ("predictor", n)

    load = runtime.one_scoring_thread(lambda alias: (alias, Predictor()))
    assert load("champion") == ("champion", ("predictor", 1))
