"""The API's answers, built from the served model and canonical customer records, free of HTTP."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from churn_mlops.serving.model import LoadedModel
from churn_mlops.serving.predlog import PredictionRecord

Record = Mapping[str, Any]


def predictions(
    model: LoadedModel, records: Sequence[Record], request_id: str, *, id_field: str, explain: bool
) -> list[dict[str, Any]]:
    """Each record's answer, as PredictionPublic without its empty fields; reasons if `explain`."""
    probabilities, decisions = model.score(records)
    reasons = model.reasons(records) if explain else None
    ids = [request_id] if len(records) == 1 else [f"{request_id}-{i}" for i in range(len(records))]
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
