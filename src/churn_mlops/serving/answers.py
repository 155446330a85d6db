"""The API's answers, built from the served model and canonical customer records, free of HTTP."""

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from churn_mlops.serving.model import LoadedModel
from churn_mlops.serving.predlog import PredictionRecord
from churn_mlops.serving.rollout import Canary

Record = Mapping[str, Any]
logger = logging.getLogger(__name__)


def predictions(
    model: LoadedModel,
    records: Sequence[Record],
    request_id: str,
    *,
    id_field: str,
    explain: bool,
    canary: Canary | None = None,
) -> list[dict[str, Any]]:
    """Each record's answer, as PredictionPublic without its empty fields; reasons if `explain`.

    With a canary, the customers in its share (by customer id, else by answer id) are answered
    by its model, the others by `model`; every answer names the version that gave it.
    """
    ids = [request_id] if len(records) == 1 else [f"{request_id}-{i}" for i in range(len(records))]
    if canary is None:
        return _answers(model, records, ids, id_field, explain)
    takes = [
        canary.takes(record.get(id_field), answer_id) for record, answer_id in zip(records, ids, strict=True)
    ]
    found: list[dict[str, Any]] = [{} for _ in records]
    champion_rows = [i for i, taken in enumerate(takes) if not taken]
    canary_rows = [i for i, taken in enumerate(takes) if taken]
    if canary_rows:
        started = time.perf_counter()
        try:
            part = _some(canary.model, records, ids, canary_rows, id_field, explain)
        except Exception:  # the canary's failure is the guards' business; the champion answers
            logger.exception("canary v%s failed to score; the champion answers", canary.model.version)
            canary.fail(len(canary_rows))
            champion_rows = list(range(len(records)))
        else:
            canary.observe(True, [a["churn_probability"] for a in part], time.perf_counter() - started)
            _, decisions = model.score([records[i] for i in canary_rows])  # what the champion would say
            canary.agree(sum(d == a["prediction"] for d, a in zip(decisions, part, strict=True)))
            for row, answered in zip(canary_rows, part, strict=True):
                found[row] = answered
    if champion_rows:
        part = _some(model, records, ids, champion_rows, id_field, explain)
        canary.observe(False, [a["churn_probability"] for a in part])
        for row, answered in zip(champion_rows, part, strict=True):
            found[row] = answered
    return found


def _some(
    model: LoadedModel,
    records: Sequence[Record],
    ids: Sequence[str],
    rows: list[int],
    id_field: str,
    explain: bool,
) -> list[dict[str, Any]]:
    return _answers(model, [records[i] for i in rows], [ids[i] for i in rows], id_field, explain)


def _answers(
    model: LoadedModel, records: Sequence[Record], ids: Sequence[str], id_field: str, explain: bool
) -> list[dict[str, Any]]:
    probabilities, decisions = model.score(records)
    reasons = model.reasons(records) if explain else None
    answers = [
        answer(model, answer_id, record.get(id_field), probability, decision)
        for answer_id, record, probability, decision in zip(
            ids, records, probabilities, decisions, strict=True
        )
    ]
    if reasons is not None:
        for found, top in zip(answers, reasons, strict=True):
            found["reasons"] = top
    return answers


def answer(
    model: LoadedModel, request_id: str, customer_id: Any, probability: float, decision: int
) -> dict[str, Any]:
    """One customer's answer, as PredictionPublic without its empty fields."""
    found = {
        "churn_probability": probability,
        "prediction": decision,
        "risk": model.risk(probability),
        "model_version": model.version,
        "request_id": request_id,
    }
    if customer_id is not None:
        found["customer_id"] = customer_id
    return found


def batch(answers: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    """A batch's answer, as BatchPublic."""
    return {"predictions": answers, "model_version": answers[0]["model_version"], "request_id": request_id}


def log_records(
    answers: Sequence[Mapping[str, Any]],
    records: Sequence[Record],
    key_name: str,
    latency_ms: float,
    at: datetime,
) -> list[PredictionRecord]:
    """The prediction log's records of the answers to `records`."""
    return [
        PredictionRecord(
            found["request_id"],
            at,
            key_name,
            found["model_version"],
            record,
            found["churn_probability"],
            found["prediction"],
            latency_ms,
        )
        for found, record in zip(answers, records, strict=True)
    ]


def description(model: LoadedModel, request_schema: dict[str, Any]) -> dict[str, Any]:
    """The served model, as ModelPublic."""
    info = model.info
    return {
        "name": info.name,
        "version": info.version,
        "aliases": info.aliases,
        "threshold": model.predictor.threshold,
        "metrics": info.metrics,
        "data_version": info.tags.get("data_version"),
        "loaded_at": model.loaded_at,
        "request_schema": request_schema,
    }
