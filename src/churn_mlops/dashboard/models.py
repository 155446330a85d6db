"""The dashboard's model panel: the champion being served, the challenger, and the gate's decisions."""

from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path
from typing import Any

from churn_mlops.errors import ChurnError
from churn_mlops.models.catalog import CHALLENGER, Catalog, VersionInfo
from churn_mlops.serving.model import LoadedModel

logger = logging.getLogger(__name__)
FIGURES = ("roc_auc", "pr_auc", "precision", "recall")
HISTORY = 20


def model_panel(served: LoadedModel | None, catalog: Catalog, audit_log: Path) -> dict[str, Any]:
    """The champion (as served), the challenger if it is another version, and recent decisions."""
    if served is None:
        return {"empty": "No model is being served: run `churn pipeline run` or `churn train`."}
    champion = {**_version(served.info), "threshold": round(served.predictor.threshold, 4)}
    champion["loaded_at"] = served.loaded_at
    challenger = _challenger(catalog, served.version)
    return {
        "champion": champion,
        "challenger": challenger,
        "history": _history(audit_log, served, challenger),
    }


def _version(info: VersionInfo) -> dict[str, Any]:
    metrics = info.metrics
    return {
        "version": info.version,
        "aliases": info.aliases,
        "created_at": info.created_at,
        "data_version": info.tags.get("data_version"),
        "metrics": {name: round(metrics[name], 4) for name in FIGURES if name in metrics},
    }


def _challenger(catalog: Catalog, champion: str) -> dict[str, Any] | None:
    try:
        info = catalog.resolve(CHALLENGER)
    except ChurnError:
        return None
    return None if info.version == champion else _version(info)


def _history(audit_log: Path, served: LoadedModel, challenger: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The audit trail's last decisions, newest first; else the decisions stored on the versions."""
    if audit_log.exists():
        with audit_log.open() as file:
            lines = deque(file, maxlen=HISTORY)
        records = [json.loads(line) for line in lines if line.strip()]
    else:
        stored = [served.info.tags.get("decision")]
        records = [json.loads(text) for text in stored if text]
    return [
        {
            "at": r.get("at"),
            "version": r.get("version"),
            "action": r.get("action"),
            "by": r.get("by"),
            "reason": r.get("reason"),
            "roc_auc": _round((r.get("metrics") or {}).get("roc_auc")),
        }
        for r in reversed(records)
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
