"""Structured logs: JSON lines, written off the caller's thread without losing or reordering any."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

from churn_mlops.serving.logs import BackgroundStreamHandler, FastInfo, JsonFormatter


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_are_json_with_the_extra_fields() -> None:
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream)
    _logger(handler, "test.logs.json").info("request", extra={"status": 200, "latency_ms": 1.5})
    handler.close()
    line = json.loads(stream.getvalue())
    assert line["message"] == "request"
    assert line["level"] == "info"
    assert (line["status"], line["latency_ms"]) == (200, 1.5)
    assert line["time"].endswith("+00:00")


def test_lines_are_written_by_the_background_thread_without_a_flush() -> None:
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream, interval=0.01)
    _logger(handler, "test.logs.background").info("soon")
    deadline = time.monotonic() + 5
    while "soon" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    handler.close()
    assert "soon" in stream.getvalue()


def test_concurrent_writers_lose_nothing_and_keep_each_threads_order() -> None:
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream, interval=0.001)
    logger = _logger(handler, "test.logs.concurrent")

    def write(thread: int) -> None:
        for i in range(2000):
            logger.info("line", extra={"writer": thread, "i": i})

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 8000
    for thread in range(4):
        assert [line["i"] for line in lines if line["writer"] == thread] == list(range(2000))


def test_a_broken_stream_does_not_break_the_caller_or_the_writer() -> None:
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream, interval=0.01)
    logger = _logger(handler, "test.logs.broken")
    stream.close()
    logger.info("into a closed stream")
    time.sleep(0.05)  # a few write attempts
    logger.info("still fine")
    assert handler._writer.is_alive()
    handler.close()


def test_fast_info_writes_the_line_logging_would() -> None:
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream)
    logger = _logger(handler, "test.logs.fast")
    fields = {"request_id": "r1", "status": 200, "latency_ms": 1.5, "key": None}
    logger.info("request", extra=fields)
    FastInfo(logger)("request", fields)
    handler.close()
    slow, fast = (json.loads(line) for line in stream.getvalue().splitlines())
    assert slow.pop("time")[:16] == fast.pop("time")[:16]  # the same minute
    assert fast == slow == {"level": "info", "logger": "test.logs.fast", "message": "request", **fields}


def test_fast_info_is_an_ordinary_logging_call_when_others_listen() -> None:
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream)
    logger = _logger(handler, "test.logs.fast.others")
    records: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(listener)
    FastInfo(logger)("request", {"status": 503})
    handler.close()
    assert [r.status for r in records] == [503]  # type: ignore[attr-defined]
    assert json.loads(stream.getvalue())["status"] == 503


def test_fast_info_respects_the_level() -> None:
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream)
    logger = _logger(handler, "test.logs.fast.level")
    logger.setLevel(logging.WARNING)
    FastInfo(logger)("request", {"status": 200})
    handler.close()
    assert stream.getvalue() == ""


def test_shutting_logging_down_while_the_writer_flushes_does_not_hang() -> None:
    """At exit `logging.shutdown()` holds each handler's lock while it flushes and closes it; the
    writer thread flushing at that moment must not wait for that lock (the server then hung on
    Ctrl-C, both threads waiting on each other)."""
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream, interval=3600)  # its own thread stays out of the way
    for i in range(3):
        handler.emit_line(f"line {i}")
    writer = threading.Thread(target=handler.flush, daemon=True)  # the writer's periodic flush

    def shutdown() -> None:  # what logging.shutdown() does with each handler
        handler.acquire()
        try:
            writer.start()
            time.sleep(0.2)  # the writer's flush is under way meanwhile
            handler.emit_line("last")
            handler.flush()
            handler.close()
        finally:
            handler.release()

    exiting = threading.Thread(target=shutdown, daemon=True)
    exiting.start()
    exiting.join(timeout=10)
    assert not exiting.is_alive(), "logging.shutdown() and the writer thread wait on each other"
    assert stream.getvalue().splitlines() == ["line 0", "line 1", "line 2", "last"]
