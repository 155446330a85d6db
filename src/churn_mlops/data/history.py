"""Synthetic customer history: snapshots that change day by day, and a churn label per customer.

Each customer starts as a synthetic Telco customer on the first day of the window and gets a
snapshot whenever their record changes: a monthly bill (tenure + 1, total charges grow), an
added service (the monthly bill grows by its price) or a longer contract. Every snapshot row
carries the customer's label (`Churn`) and when it was observed (`churn_observed_at`):

- a churner's label is Yes, observed on the day they leave; they have no snapshot after it;
- a stayer's label is No, observed on a review day in the second half of the window, and they
  keep changing after it: some are moved onto a one-year contract at a discount (a retention
  offer). Those later snapshots must not reach the label's training row, which is what the
  point-in-time join guarantees and the newest snapshot does not.

Snapshots are taken during a day (before 20:00 UTC), labels at its last second; the window is
the `days` days before `end`, so nothing lies in the future of `end`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from churn_mlops.data.synthetic import ADDON_PRICES, ADDONS, BLOCK_ROWS, customers

SNAPSHOT_AT = "snapshot_at"
OBSERVED_AT = "churn_observed_at"
DYNAMIC = ("tenure", "MonthlyCharges", "TotalCharges", "Contract", *ADDONS)
ADD_SERVICE, UPGRADE, RETAIN = 0.004, 0.002, 0.03  # daily chances
BILLING_DAYS = 30
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def history(rows: int, *, days: int, seed: int = 0, end: datetime | None = None) -> Iterator[pl.DataFrame]:
    """Yield snapshots of `rows` customers over the `days` days before `end` (default: today 00:00 UTC)."""
    end = end or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for block, start in enumerate(range(0, rows, BLOCK_ROWS)):
        size = min(BLOCK_ROWS, rows - start)
        rng = np.random.default_rng([seed, block, days])
        base = customers(rng, size, start=start, seed=seed, drift=0.0)
        yield customer_history(base, rng, days=days, origin=end - timedelta(days=days))


def customer_history(
    base: pl.DataFrame, rng: np.random.Generator, *, days: int, origin: datetime
) -> pl.DataFrame:
    """Snapshots of the customers in `base` (raw Telco columns) from day 0 at `origin`, with labels."""
    n = base.height
    churned = base.get_column("Churn").to_numpy() == "Yes"
    leave_day = rng.integers(min(1, days - 1), days, n)
    review_day = rng.integers(days // 2, days, n)
    label_day = np.where(churned, leave_day, review_day)
    state = {c: base.get_column(c).to_numpy().copy() for c in DYNAMIC}
    state["TotalCharges"] = state["TotalCharges"].astype(np.float64)
    billing = rng.integers(0, BILLING_DAYS, n)
    taken = [_take(state, np.arange(n), 0)]
    for day in range(1, days):
        active = ~churned | (day < leave_day)
        changed = _advance(state, rng, day, active & (day % BILLING_DAYS == billing), churned, review_day)
        taken.append(_take(state, np.flatnonzero(changed & active), day))
    return _frame(base, taken, label_day, origin, rng)


def _advance(
    state: dict[str, np.ndarray],
    rng: np.random.Generator,
    day: int,
    billed: np.ndarray,
    churned: np.ndarray,
    review_day: np.ndarray,
) -> np.ndarray:
    """Apply one day's changes to the state in place; return which customers changed."""
    state["tenure"] = np.where(billed, np.minimum(state["tenure"] + 1, 120), state["tenure"])
    total = np.nan_to_num(state["TotalCharges"]) + state["MonthlyCharges"]
    state["TotalCharges"] = np.where(billed, total.round(2), state["TotalCharges"])
    addon = rng.integers(0, len(ADDONS), len(churned))
    adds = (rng.random(len(churned)) < ADD_SERVICE) & ~churned
    for index, (name, price) in enumerate(zip(ADDONS, ADDON_PRICES, strict=True)):
        take = adds & (addon == index) & (state[name] == "No")
        state[name] = np.where(take, "Yes", state[name])
        state["MonthlyCharges"] = np.where(take, state["MonthlyCharges"] + price, state["MonthlyCharges"])
        billed = billed | take
    monthly = state["Contract"] == "Month-to-month"
    upgrade = monthly & ~churned & (rng.random(len(churned)) < UPGRADE)
    retain = monthly & ~churned & (day > review_day) & (rng.random(len(churned)) < RETAIN)
    state["Contract"] = np.where(upgrade | retain, "One year", state["Contract"])
    discounted = (state["MonthlyCharges"] * 0.9).round(2)
    state["MonthlyCharges"] = np.where(retain & ~upgrade, discounted, state["MonthlyCharges"])
    return np.asarray(billed | upgrade | retain, dtype=bool)


def _take(state: dict[str, np.ndarray], index: np.ndarray, day: int) -> dict[str, np.ndarray]:
    """A copy of the changed customers' state, with their row index and the day."""
    return {"_index": index, "_day": np.full(len(index), day), **{c: v[index] for c, v in state.items()}}


def _frame(
    base: pl.DataFrame,
    taken: list[dict[str, np.ndarray]],
    label_day: np.ndarray,
    origin: datetime,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """Snapshot rows in raw Telco columns, plus the snapshot time, the label and its time."""
    parts = {c: np.concatenate([t[c] for t in taken]) for c in taken[0]}
    index, day = parts.pop("_index"), parts.pop("_day")
    start = int(origin.timestamp())
    taken_at = start + day * 86_400 + rng.integers(0, 20 * 3600, len(day))
    observed = start + label_day[index] * 86_400 + 86_399
    dynamic = pl.DataFrame(parts).with_columns(
        pl.col("TotalCharges").fill_nan(None),
        pl.from_epoch(pl.Series(taken_at), time_unit="s").dt.strftime(_STAMP).alias(SNAPSHOT_AT),
        pl.from_epoch(pl.Series(observed), time_unit="s").dt.strftime(_STAMP).alias(OBSERVED_AT),
    )
    static = base.drop(DYNAMIC)[index]
    frame = static.hstack(dynamic.get_columns())
    order = ["customerID", SNAPSHOT_AT, *[c for c in base.columns if c != "customerID"], OBSERVED_AT]
    return frame.select(order).sort("customerID", SNAPSHOT_AT)
