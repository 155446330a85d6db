"""The latest monitoring results as Prometheus gauges, for the model server's /metrics.

Read from the results tables (never the prediction log), at most once per `cache_seconds`, so a
scrape costs a few small queries; a store that cannot be read yields no monitoring gauges
rather than a failed scrape.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from churn_mlops.errors import first_line
from churn_mlops.monitoring import tables

logger = logging.getLogger(__name__)
KIND = "1d"


class MonitoringCollector(Collector):
    """Drift, performance, open alerts and the last run's time from the monitoring store."""

    def __init__(self, engine: sa.Engine, cache_seconds: float = 15.0) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges, from the cache while it is fresh."""
        if self._cached is None or time.monotonic() - self._cached[0] > self.cache_seconds:
            self._cached = (time.monotonic(), self._read())
        yield from self._cached[1]

    def _read(self) -> list[GaugeMetricFamily]:
        try:
            with self.engine.connect() as connection:
                if not sa.inspect(connection).has_table(tables.windows.name):
                    return []
                return families(*_latest(connection))
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("monitoring gauges unavailable: %s", first_line(exc))
            return []


def _latest(connection: sa.Connection) -> tuple[list[dict[str, Any]], dict[str, int], str | None]:
    w, a, s = tables.windows, tables.alerts, tables.state
    results = [
        json.loads(r[0])
        for r in connection.execute(sa.select(w.c.result).where(w.c.kind == KIND).order_by(w.c.start_day))
    ]
    open_alerts = {
        str(r[0]): int(r[1])
        for r in connection.execute(
            sa.select(a.c.severity, sa.func.count()).where(a.c.state == "firing").group_by(a.c.severity)
        )
    }
    last_run = connection.scalar(sa.select(s.c.value).where(s.c.name == tables.LAST_RUN))
    return results, open_alerts, last_run


def families(
    results: list[dict[str, Any]], open_alerts: dict[str, int], last_run: str | None
) -> list[GaugeMetricFamily]:
    """The gauge families for the windows (oldest first), open alerts and last run.

    Drift and coverage come from each version's latest complete window (today's is partial),
    ROC AUC from the latest window that has the figure.
    """
    version = ["model_version"]
    feature = ["model_version", "feature"]
    psi = GaugeMetricFamily(
        "churn_monitor_feature_psi", "PSI of a feature, latest complete window", labels=feature
    )
    js = GaugeMetricFamily("churn_monitor_feature_js", "Jensen-Shannon distance of a feature", labels=feature)
    drifted = GaugeMetricFamily("churn_monitor_feature_drifted", "1 if the feature drifted", labels=feature)
    share = GaugeMetricFamily("churn_monitor_drift_share", "Share of drifted features", labels=version)
    score = GaugeMetricFamily("churn_monitor_score_psi", "PSI of the score distribution", labels=version)
    coverage = GaugeMetricFamily(
        "churn_monitor_label_coverage", "Labelled share of predictions", labels=version
    )
    auc = GaugeMetricFamily(
        "churn_monitor_roc_auc", "ROC AUC, latest window with it", labels=[*version, "source"]
    )
    for model, result in _latest_complete(results).items():
        _add(share, [model], result["drift"]["share"])
        _add(score, [model], result["drift"]["score"]["value"])
        _add(coverage, [model], result["performance"]["coverage"])
        for item in result["drift"]["features"]:
            _add(psi, [model, item["feature"]], item.get("psi"))
            _add(js, [model, item["feature"]], item.get("js"))
            _add(drifted, [model, item["feature"]], float(item["drifted"]))
    for (model, source), value in _latest_auc(results).items():
        auc.add_metric([model, source], value)
    alerts = GaugeMetricFamily("churn_monitor_open_alerts", "Alerts firing", labels=["severity"])
    for severity in ("info", "warning", "critical"):
        alerts.add_metric([severity], open_alerts.get(severity, 0))
    run = GaugeMetricFamily("churn_monitor_last_run_timestamp_seconds", "When the last monitoring run ended")
    if last_run is not None:
        run.add_metric([], datetime.fromisoformat(last_run).timestamp())
    return [psi, js, drifted, share, score, coverage, auc, alerts, run]


def _latest_complete(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each version's latest complete window, or its latest one if none is complete yet."""
    latest: dict[str, dict[str, Any]] = {}
    for result in results:
        current = latest.get(result["model_version"])
        if current is None or result["complete"] or not current["complete"]:
            latest[result["model_version"]] = result
    return latest


def _latest_auc(results: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    latest: dict[tuple[str, str], float] = {}
    for result in results:
        for source in ("realised", "estimated"):
            value = (result["performance"][source] or {}).get("roc_auc")
            if value is not None:
                latest[(result["model_version"], source)] = value
    return latest


def _add(family: GaugeMetricFamily, labels: list[str], value: float | None) -> None:
    if value is not None:
        family.add_metric(labels, value)
