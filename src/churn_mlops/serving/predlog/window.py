"""When the prediction log's batches wait for more predictions: the batching window's policy.

It applies where the log's writer thread commits (PostgreSQL); on SQLite the event loop commits
each turn's predictions itself, and no batch waits.

The window is there for throughput: a commit and the hand-offs around it cost about as much CPU as
the rest of a request, so when requests arrive on their own (an open loop), one commit for several
of them leaves the core free for more. It is only kept while it pays. Once every request the
server is handling (`in_flight`) is waiting on the log, only a request that has yet to arrive can
join; when QUIET_WINDOWS windows in a row close without one (a lone client, or a few that each
wait on their answers: no request comes until one is answered), batches go to the writer at the
end of the event loop's iteration instead, for WINDOWLESS_SECONDS and at least WINDOWLESS_BATCHES
batches; then a window is tried again. A request counts as arriving when the server starts it
(`arrivals`), not only when it reaches the log, because in an open loop one often arrives within
the window but writes after it. It takes several quiet windows in a row, because in an open loop
one or two can be quiet by chance, and after a stall of the loop its timer fires before the
requests that came meanwhile are read.

`PredictionLog` asks `next_window` for each new batch, marks a batch `settled` when a turn of the
loop finds everyone waiting, and reports each window that closes to `closed`; it holds its own
lock around every call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

WINDOWLESS_SECONDS: Final = 0.1  # no window for this long after QUIET_WINDOWS quiet ones,
WINDOWLESS_BATCHES: Final = 16  # and for at least this many batches
QUIET_WINDOWS: Final = 6  # windows in a row without a newcomer before going without


@dataclass
class WindowState:
    """What one batch's window has seen."""

    windowed: bool = False
    settled: bool = False  # a turn of the loop found every request in flight waiting on the log
    arrivals: int = 0  # the server's count of requests started, when the batch settled
    newcomers: bool = False  # a write came after that: a request that arrived during the window
    checking: bool = False  # a look at the requests in flight is due on the loop's next turn


class WindowPolicy:
    """Decides whether the next batch waits `wait_ms`, from how the windows before it went."""

    def __init__(self, wait_ms: float) -> None:
        self.wait_ms = wait_ms
        self.in_flight: Callable[[], int] | None = None  # requests being served; None: only the log's
        self.arrivals: Callable[[], int] | None = None  # requests started so far; None: writes tell
        self._windowless_until = 0.0  # event-loop time before which batches get no window,
        self._windowless_batches = 0  # nor before this many more batches
        self._quiet_windows = 0  # windows in a row that gathered no newcomer

    def next_window(self, now: float) -> float:
        """Seconds the next batch waits for more predictions; 0: it goes on the loop's next turn."""
        if self.wait_ms > 0 and self._windowless_batches == 0 and now >= self._windowless_until:
            return self.wait_ms / 1000
        self._windowless_batches = max(0, self._windowless_batches - 1)
        return 0.0

    def all_waiting(self, waiting: int) -> bool:
        """Whether every request the server is handling waits on the log (no `in_flight`: yes)."""
        return self.in_flight is None or self.in_flight() <= waiting

    def settle(self, state: WindowState) -> None:
        """Everyone in flight waits in this window: only a request that arrives from now on can join."""
        state.settled = True
        state.arrivals = self.arrivals() if self.arrivals is not None else 0

    def closed(self, state: WindowState, full: bool, now: float) -> None:
        """A window ended. It was quiet if everyone in flight was in it and nobody arrived after:
        it only added latency. QUIET_WINDOWS in a row put the next batches on the loop's next turn."""
        arrived = state.newcomers or (self.arrivals is not None and self.arrivals() > state.arrivals)
        quiet = state.settled and not arrived and not full
        self._quiet_windows = self._quiet_windows + 1 if quiet else 0
        if self._quiet_windows >= QUIET_WINDOWS:
            self._quiet_windows = 0
            self._windowless_until = now + WINDOWLESS_SECONDS
            self._windowless_batches = WINDOWLESS_BATCHES
