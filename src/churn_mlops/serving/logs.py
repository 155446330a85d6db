"""Structured logs: one JSON object per line, with request fields passed as `extra`.

The server writes an access line per request. A write to stderr can block for milliseconds
(a pipe whose reader is slow, a file behind the page cache's writeback), and on the event loop
that would stall every request in flight. So records are formatted where they are logged and
written by a background thread, a batch at a time; a process killed with SIGKILL loses at most
the last `interval` of log lines (the prediction log, not this, is the durable record).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO, cast

import orjson

from churn_mlops.runtime import lean_log_records

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def json_line(created: float, level: str, logger: str, message: str, fields: dict[str, Any]) -> str:
    """One log line: time (UTC, milliseconds), level, logger, message, then the fields."""
    document: dict[str, Any] = {
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": logger,
        "message": message,
    }
    document |= fields
    return orjson.dumps(document, default=str).decode()


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: time, level, logger, message and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON text."""
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(record.created, record.levelname.lower(), record.name, record.getMessage(), fields)


class BackgroundStreamHandler(logging.Handler):
    """Format records on the caller's thread; write them to a stream from a thread of its own.

    Lines are written every `interval` seconds, and on flush() and close().
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 0.05) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._lines: list[str] = []
        # Not the handler's own lock: logging.shutdown() holds that while it flushes, and a
        # flush under way on the writer thread would then wait for it, holding `_writing`.
        self._queued = threading.Lock()  # guards `_lines`; nothing is acquired while holding it
        self._writing = threading.Lock()  # held from taking the lines to writing them
        self._closing = threading.Event()
        self._writer = threading.Thread(target=self._write_periodically, name="log-writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the formatted record (called under the handler's lock)."""
        try:
            line = self.format(record)
            with self._queued:
                self._lines.append(line)
        except Exception:  # as logging.StreamHandler does: a bad record must not break the caller
            self.handleError(record)

    def emit_line(self, line: str) -> None:
        """Queue a line formatted by the caller (see `FastInfo`)."""
        with self._queued:
            self._lines.append(line)

    def flush(self) -> None:
        """Write every queued line now, in order (one writer at a time)."""
        with self._writing:
            with self._queued:
                lines, self._lines = self._lines, []
            if lines:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # a closed or broken stream: the lines have nowhere to go
                    pass

    def close(self) -> None:
        """Stop the writer thread and write what is left."""
        self._closing.set()
        if self._writer is not threading.current_thread():
            self._writer.join(timeout=5)
        self.flush()
        super().close()

    def _write_periodically(self) -> None:
        while not self._closing.wait(self.interval):
            self.flush()


class FastInfo:
    """`logger.info(message, extra=fields)` for a logger on the hot path, at a third of the cost.

    A logging call builds a LogRecord and walks the logger tree: about 14 us, on every request
    for the access log. When the record would only reach the root's BackgroundStreamHandler with
    a JsonFormatter (the set-up of `configure_json_logging`: no other handler or filter on the
    way), the same JSON line is queued there directly. Any other set-up (a test capturing
    records, a handler added later) gets the ordinary logging call.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def __call__(self, message: str, fields: dict[str, Any]) -> None:
        """Log `message` with `fields` at INFO."""
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = _json_handler_only(logger)
        if handler is None:
            logger.info(message, extra=fields)
        else:
            handler.emit_line(json_line(time.time(), "info", logger.name, message, fields))


def _json_handler_only(logger: logging.Logger) -> BackgroundStreamHandler | None:
    """The handler an INFO record of `logger` would reach, when that is one JSON background handler."""
    current: logging.Logger | None = logger
    found: list[logging.Handler] = []
    while current is not None:
        if current.filters:
            return None
        found += current.handlers
        current = current.parent if current.propagate else None
    if len(found) != 1:
        return None
    handler = found[0]
    # Exact types: a subclass may format or emit differently.
    plain = type(handler) is BackgroundStreamHandler and type(handler.formatter) is JsonFormatter
    if not plain or handler.filters or handler.level > logging.INFO:
        return None
    return cast(BackgroundStreamHandler, handler)


def configure_json_logging(level: int = logging.INFO) -> None:
    """Send every log record to stderr as JSON lines, written off the caller's thread.

    The JSON lines carry neither thread, process nor source location, so records skip finding
    them (`runtime.lean_log_records`).
    """
    lean_log_records()
    handler = BackgroundStreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(level)
