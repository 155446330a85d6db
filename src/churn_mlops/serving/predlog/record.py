"""A served prediction as the log takes it, and the table row it becomes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

from churn_mlops.serving.predlog.table import PredictionLogError, Row


class PredictionRecord(NamedTuple):
    """One served prediction, as the log stores it (a tuple: one is made per request)."""

    request_id: str
    at: datetime
    key_name: str | None
    model_version: str
    inputs: Mapping[str, object]
    probability: float
    prediction: int
    latency_ms: float


def to_row(record: PredictionRecord, naive_utc_text: bool) -> Row:
    """The table row for one record, in COLUMNS order; inputs become JSON text.

    `at` is naive UTC text on SQLite, in the format SQLAlchemy's DateTime reads back.
    """
    if record.at.tzinfo is None:
        raise PredictionLogError(f"prediction {record.request_id}: `at` must be timezone-aware")
    try:
        inputs = orjson.dumps(record.inputs).decode()
    except TypeError as exc:
        raise PredictionLogError(f"prediction {record.request_id}: inputs are not JSON: {exc}") from exc
    utc = record.at.astimezone(UTC)
    at = utc.replace(tzinfo=None).isoformat(" ", "microseconds") if naive_utc_text else utc
    return (
        record.request_id,
        at,
        record.key_name,
        record.model_version,
        inputs,
        float(record.probability),
        int(record.prediction),
        float(record.latency_ms),
    )
