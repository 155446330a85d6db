"""The dashboard's panels, each a JSON-ready dict built from the stored snapshot (pure functions).

A panel with nothing to show carries `empty`: the command that would fill it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from churn_mlops.dashboard.store import Snapshot
from churn_mlops.monitoring.runs import BATCH, INGEST
from churn_mlops.serving.traffic import bucket_upper_ms

PERFORMANCE = ("roc_auc", "pr_auc", "precision", "recall")
TOP_CUSTOMERS = 20


def build(snapshot: Snapshot, model: dict[str, Any]) -> dict[str, Any]:
    """Every panel, keyed by its `data-panel` name."""
    windows = snapshot.windows
    return {
        "window": {"since": snapshot.since.isoformat(), "until": snapshot.until.isoformat()},
        "model": model | {"rollout": snapshot.rollout} if "champion" in model else model,
        "traffic": traffic(snapshot),
        "scores": scores(windows),
        "drift": drift(windows),
        "performance": performance(windows),
        "alerts": alerts(snapshot),
        "at-risk": at_risk(snapshot.runs),
        "data-quality": data_quality(snapshot.runs),
    }


def traffic(snapshot: Snapshot) -> dict[str, Any]:
    """Predictions per day (online and batch), requests, errors, rate-limited and latency p50/p99."""
    volume: dict[str, dict[str, int]] = defaultdict(dict)
    for day, source, rows in snapshot.volumes:
        volume[day][source] = volume[day].get(source, 0) + rows
    served: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    statuses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for day, status, bucket, requests in snapshot.traffic:
        statuses[day][_status_class(status)] += requests
        if status < 400:
            served[day][bucket] += requests
    days = sorted(volume.keys() | statuses.keys())
    if not days:
        return {"empty": "No predictions yet: run `churn simulate`, or send requests to /predict."}
    return {
        "days": days,
        "online": [volume[d].get("online", 0) for d in days],
        "batch": [volume[d].get("batch", 0) for d in days],
        "requests": [sum(statuses[d].values()) for d in days],
        "errors": [statuses[d]["5xx"] for d in days],
        "rate_limited": [statuses[d]["429"] for d in days],
        "rejected": [statuses[d]["4xx"] for d in days],
        "p50_ms": [_quantile(served[d], 0.50) for d in days],
        "p99_ms": [_quantile(served[d], 0.99) for d in days],
    }


def scores(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest window's score distribution against the reference, and the decision rate by day."""
    drawn = [w for w in windows if "distributions" in w]
    if not drawn:
        return {"empty": "No monitoring results yet: run `churn simulate`, then `churn monitor run`."}
    latest = drawn[-1]
    return {
        "labels": latest["distributions"]["scores"]["labels"],
        "reference": latest["distributions"]["scores"]["reference"],
        "windows": [_label(w, windows) for w in drawn],
        "distributions": [w["distributions"]["scores"]["window"] for w in drawn],
        "decision_rate": [w["distributions"]["decision_rate"] for w in drawn],
        "latest": _label(latest, windows),
    }


def drift(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Features by windows: each cell the drift value over its threshold (1 = at the threshold)."""
    if not windows:
        return {"empty": "No drift results yet: run `churn simulate`, then `churn monitor run`."}
    features = [f["feature"] for f in windows[-1]["drift"]["features"]]
    cells: dict[str, list[dict[str, Any] | None]] = {name: [] for name in features}
    for window in windows:
        found = {f["feature"]: f for f in window["drift"]["features"]}
        for name in features:
            cells[name].append(_cell(found.get(name)))
    return {
        "features": features,
        "windows": [_label(w, windows) for w in windows],
        "ratio": [[c["ratio"] if c else None for c in cells[name]] for name in features],
        "cells": [cells[name] for name in features],
        "share": [w["drift"]["share"] for w in windows],
        "keys": [{"day": w["start"], "version": w["model_version"]} for w in windows],  # for /histogram
    }


def histogram(window: dict[str, Any] | None, feature: str) -> dict[str, Any] | None:
    """One feature's shares in a window beside the reference's, if the window stored them."""
    if window is None:
        return None
    found: dict[str, Any] | None = (window.get("distributions") or {}).get("features", {}).get(feature)
    return found


def performance(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Realised figures per window with label coverage, estimated ones, and the test figures."""
    if not windows:
        return {"empty": "No performance results yet: run `churn simulate`, then `churn monitor run`."}
    realised = {name: [_figure(w, "realised", name) for w in windows] for name in PERFORMANCE}
    estimated = {name: [_figure(w, "estimated", name) for w in windows] for name in PERFORMANCE}
    test = windows[-1]["performance"].get("test", {})
    return {
        "windows": [_label(w, windows) for w in windows],
        "realised": realised,
        "estimated": estimated,
        "coverage": [w["performance"]["coverage"] for w in windows],
        "labels": [w["performance"]["labels"] for w in windows],
        "labels_due": [w["performance"]["labels_due"] for w in windows],
        "test": {name: test.get(name) for name in PERFORMANCE},
    }


def alerts(snapshot: Snapshot) -> dict[str, Any]:
    """Open alerts first, then the most recent."""
    rows = [
        {**row, "value": _round(row["value"]), "threshold": _round(row["threshold"])}
        for row in snapshot.alerts
    ]
    if not rows and snapshot.last_monitor_run is None:
        return {"empty": "No monitoring run yet: run `churn monitor run` to evaluate the alert rules."}
    return {
        "rows": rows,
        "open": sum(r["state"] == "firing" for r in rows),
        "last_run": snapshot.last_monitor_run,
    }


def at_risk(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest batch run: revenue at risk and its customers of most expected loss."""
    batch = next((r for r in runs if r["kind"] == BATCH), None)
    if batch is None:
        return {
            "empty": "No batch run yet: run `churn batch score --input CUSTOMERS --output scores.parquet`."
        }
    summary = batch["summary"]
    return {
        "run_date": summary.get("run_date"),
        "finished_at": batch["finished_at"],
        "model_version": batch["model_version"],
        "rows_scored": summary.get("rows_scored"),
        "revenue_at_risk": summary.get("revenue_at_risk"),
        "risk": (summary.get("scores") or {}).get("risk", {}),
        "customers": (summary.get("at_risk") or [])[:TOP_CUSTOMERS],
    }


def data_quality(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Ingests and batch runs: rows in, valid, quarantined, and the main reasons."""
    if not runs:
        return {
            "empty": "No ingest or batch run recorded yet: run `churn data ingest` or `churn batch score`."
        }
    return {
        "rows": [
            {
                "kind": run["kind"],
                "finished_at": run["finished_at"],
                "source": _short_source(str(run["summary"].get("source") or run["summary"].get("input"))),
                "rows_in": run["rows_in"],
                "rows_valid": run["rows_valid"],
                "rows_quarantined": run["rows_quarantined"],
                "reasons": _reasons(run),
            }
            for run in runs
        ]
    }


def _reasons(run: dict[str, Any]) -> str:
    if run["kind"] == INGEST:
        failures = run["summary"].get("failures") or []
        return "; ".join(f"{f['column']}: {f['check']} ({f['rows']})" for f in failures[:3])
    columns = run["summary"].get("quarantine_columns") or {}
    return "; ".join(f"{name} ({rows})" for name, rows in list(columns.items())[:3])


def _short_source(text: str) -> str:
    """A source as a table cell: a file's name, or a URL's scheme and last part (no folders)."""
    head, _, rest = text.partition(" ")
    scheme = head.split("://", 1)[0] + ":" if "://" in head else ""
    return " ".join(part for part in (scheme + head.rstrip("/").rsplit("/", 1)[-1], rest) if part)


def _label(window: dict[str, Any], windows: list[dict[str, Any]]) -> str:
    versions = {w["model_version"] for w in windows}
    return window["start"] if len(versions) == 1 else f"{window['start']} v{window['model_version']}"


def _cell(found: dict[str, Any] | None) -> dict[str, Any] | None:
    if found is None or found.get("value") is None:
        return None
    value, threshold = float(found["value"]), float(found["threshold"])
    if found.get("method") == "chi2":  # a p-value: smaller is more drift
        ratio = threshold / value if value > 0 else 10.0
    else:
        ratio = value / threshold if threshold else 0.0
    return {
        "value": _round(value),
        "threshold": _round(threshold),
        "method": found.get("method"),
        "drifted": bool(found.get("drifted")),
        "ratio": round(min(ratio, 10.0), 4),
    }


def _figure(window: dict[str, Any], source: str, name: str) -> float | None:
    figures = window["performance"].get(source) or {}
    return _round(figures.get(name))


def _quantile(buckets: dict[int, int], q: float) -> float | None:
    total = sum(buckets.values())
    if not total:
        return None
    seen = 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen >= q * total:
            return bucket_upper_ms(bucket)
    return bucket_upper_ms(max(buckets))


def _status_class(status: int) -> str:
    if status == 429:
        return "429"
    return "5xx" if status >= 500 else "4xx" if status >= 400 else "2xx"


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)
