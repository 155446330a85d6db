"""A batch of rows for one transaction, and how its waiters are woken once it is committed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass, field
from typing import TypeAlias

from churn_mlops.serving.predlog.table import PredictionLogError, Row
from churn_mlops.serving.predlog.window import WindowState

logger = logging.getLogger("churn_mlops.serving.predlog")

Waiter: TypeAlias = asyncio.Future[None] | concurrent.futures.Future[None]


@dataclass
class Batch:
    """Rows for one transaction and whoever waits for them."""

    rows: list[Row] = field(default_factory=list)
    waiters: list[Waiter] = field(default_factory=list)
    timer: asyncio.Handle | None = None  # what seals it: the window's end, or the loop's next turn
    window: WindowState = field(default_factory=WindowState)


def failure(message: str, cause: BaseException) -> PredictionLogError:
    """A PredictionLogError caused by `cause`, for a waiter to raise."""
    error = PredictionLogError(message)
    error.__cause__ = cause
    return error


def expire(waiters: list[Waiter], seconds: float) -> None:
    """Fail a loop's waiters not yet answered (runs on that loop); a late commit then changes nothing."""
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(
                PredictionLogError(f"the prediction log did not answer within {seconds:g} s")
            )


def settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    """Resolve one loop's waiters (runs on that loop); each failure gets its own exception."""
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(failure(str(error), error.__cause__ or error))


def resolve(waiters: list[Waiter], error: PredictionLogError | None) -> None:
    """Wake the waiters of a commit: one thread-safe callback per event loop, not per write."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for waiter in waiters:
        if isinstance(waiter, asyncio.Future):
            by_loop.setdefault(waiter.get_loop(), []).append(waiter)
        elif waiter.done():
            continue
        elif error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(failure(str(error), error.__cause__ or error))
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(settle, futures, error)
        except RuntimeError:  # the caller's loop is closed; nobody is waiting any more
            logger.debug("prediction log: event loop closed before its writes were acknowledged")
