"""Simulated traffic: back-dated predictions through the champion, and their outcomes as labels.

Day i of `days` (counted from 0) is the calendar day `days - 1 - i` days before today (the last
one is today, up to now). Its customers come from the synthetic generator; the first
`drift_from_day` days are as the model was trained, and the mix drifts from the next day on;
the champion scores them with the same Predictor the server uses, and each prediction lands in
the prediction log as the server would log it, with a latency, and the day's requests (a few
of them refused) in the served-traffic counts as the server would count them. The outcome the
generator drew for a customer arrives as a label `label_delay_days` after the prediction, if
that moment has already come.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.synthetic import generate
from churn_mlops.data.validation import validate
from churn_mlops.models.artifacts import Predictor
from churn_mlops.monitoring.job import Advance
from churn_mlops.monitoring.store import MonitorStore
from churn_mlops.serving.predlog import Insert, predictions_table
from churn_mlops.serving.traffic import BUCKET_EDGES_MS, Key, add_counts, bucket_of
from churn_mlops.settings import Settings

KEY_NAME = "simulator"


def simulate(
    settings: Settings,
    spec: DatasetSpec,
    *,
    days: int,
    per_day: int,
    drift_from_day: int | None = None,
    drift: float = 0.0,
    label_delay_days: float = 7.0,
    seed: int = 0,
    model: str = "champion",
    now: datetime | None = None,
    advance: Advance = lambda n: None,
) -> dict[str, Any]:
    """Write `days` x `per_day` predictions and the labels already due; return what was written."""
    from churn_mlops.models.registry import Registry

    now = now or datetime.now(UTC)
    registry = Registry.from_settings(settings)
    info, predictor = registry.load(model)
    predictor = predictor.with_threads(settings.batch.num_threads)
    store = MonitorStore(settings.serving_database_url)
    rng = np.random.default_rng(seed)
    predictions = labels = 0
    try:
        with store.errors():
            for index in range(days):
                shifted = drift if drift_from_day is not None and index >= drift_from_day else 0.0
                frame = _customers(spec, per_day, seed * 100_000 + index, shifted)
                at = _times(rng, now.date() - timedelta(days=days - 1 - index), frame.height, now)
                latency_ms = rng.lognormal(np.log(2.0), 0.45, frame.height)  # median 2 ms, p99 about 6 ms
                logged = _log_rows(
                    frame, at, latency_ms, predictor, info.version, spec, store.engine.dialect.name
                )
                _write_predictions(store, logged)
                add_counts(store.engine, _served(at[0], latency_ms, rng).items())
                outcomes = _labels(frame, at, spec, label_delay_days, now)
                labels += store.outcomes.add_labels(outcomes, source="simulator")[0]
                predictions += len(logged)
                advance(len(logged))
    finally:
        store.close()
    return {
        "model_version": info.version,
        "days": days,
        "first_day": (now.date() - timedelta(days=days - 1)).isoformat(),
        "predictions": predictions,
        "labels": labels,
        "drift_from": (now.date() - timedelta(days=days - 1 - drift_from_day)).isoformat()
        if drift_from_day is not None and drift > 0
        else None,
    }


def _write_predictions(store: MonitorStore, rows: list[tuple[Any, ...]]) -> None:
    """Insert log rows as the prediction log does: multi-row INSERTs in one transaction."""
    insert = Insert(store.engine, predictions_table())
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        insert.commit(connection, rows)


def _customers(spec: DatasetSpec, rows: int, seed: int, drift: float) -> pl.DataFrame:
    raw = pl.concat(list(generate(rows, seed=seed, drift=drift)))
    return validate(raw, spec).valid


def _times(rng: np.random.Generator, day: date, rows: int, now: datetime) -> list[datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    span = min(86_400.0, (now - start).total_seconds())
    offsets = np.sort(rng.uniform(0, span, rows))
    return [start + timedelta(seconds=float(s)) for s in offsets]


def _served(day: datetime, latency_ms: np.ndarray, rng: np.random.Generator) -> Counter[Key]:
    """The served-traffic counts of a simulated day: its answers, and a few refused requests."""
    epoch_day = int(day.timestamp()) // 86_400
    counts: Counter[Key] = Counter()
    buckets = np.searchsorted(BUCKET_EDGES_MS, latency_ms, side="left")  # as bucket_of, for an array
    for bucket, n in zip(*np.unique(buckets, return_counts=True), strict=True):
        counts[(epoch_day, "/predict", 200, int(bucket))] += int(n)
    for status, share in ((422, 0.004), (429, 0.002)):  # bad bodies, and a client over its limit
        counts[(epoch_day, "/predict", status, bucket_of(0.5))] += int(rng.binomial(len(latency_ms), share))
    return counts


def _log_rows(
    frame: pl.DataFrame,
    at: list[datetime],
    latency_ms: np.ndarray,
    predictor: Predictor,
    version: str,
    spec: DatasetSpec,
    dialect: str,
) -> list[tuple[Any, ...]]:
    """Rows of the prediction log (its COLUMNS), as the server writes them."""
    probabilities, decisions = predictor.predict(frame)
    request_columns = [spec.id.name, *(c.name for c in spec.features)]
    inputs = frame.select(pl.struct(request_columns).struct.json_encode()).to_series().to_list()
    return [
        (
            uuid.uuid4().hex,
            _bind(when, dialect),
            KEY_NAME,
            version,
            body,
            float(p),
            int(d),
            round(float(ms), 3),
        )
        for when, body, p, d, ms in zip(at, inputs, probabilities, decisions, latency_ms, strict=True)
    ]


def _bind(at: datetime, dialect: str) -> datetime | str:
    """The driver value of a UTC time: naive ISO text on SQLite (as the log writes it), else aware."""
    return at.replace(tzinfo=None).isoformat(" ", "microseconds") if dialect == "sqlite" else at


def _labels(
    frame: pl.DataFrame, at: list[datetime], spec: DatasetSpec, delay_days: float, now: datetime
) -> pl.DataFrame:
    observed = [when + timedelta(days=delay_days) for when in at]
    outcomes = pl.DataFrame(
        {
            "customer_id": frame.get_column(spec.id.name),
            "churned": frame.get_column(spec.target.name).cast(pl.Boolean),
            "observed_ms": [int(t.timestamp() * 1000) for t in observed],
        }
    )
    return outcomes.filter(pl.col("observed_ms") <= int(now.timestamp() * 1000))
