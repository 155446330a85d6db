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
            logger.warning("monitoring gauges unavailable: %s", str(exc).splitlines()[0])
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
    """The gauge families for the windows (oldest first), open alerts and last run."""
    drift = GaugeMetricFamily(
        "churn_monitor_feature_drift",
        "Drift statistic of a feature in the latest window",
        labels=["model_version", "feature", "method"],
    )
    drifted = GaugeMetricFamily(
        "churn_monitor_feature_drifted",
        "1 if the feature drifted in the latest window",
        labels=["model_version", "feature"],
    )
    share = GaugeMetricFamily(
        "churn_monitor_drift_share", "Share of drifted features", labels=["model_version"]
    )
    score = GaugeMetricFamily(
        "churn_monitor_score_psi", "PSI of the score distribution", labels=["model_version"]
    )
    auc = GaugeMetricFamily(
        "churn_monitor_roc_auc",
        "ROC AUC of the latest window that has it",
        labels=["model_version", "source"],
    )
    coverage = GaugeMetricFamily(
        "churn_monitor_label_coverage", "Labelled share of predictions", labels=["model_version"]
    )
    latest: dict[str, dict[str, Any]] = {}
    for result in results:
        version = result["model_version"]
        latest[version] = result
        for source in ("realised", "estimated"):
            value = (result["performance"][source] or {}).get("roc_auc")
            if value is not None:
                latest[f"{version}:{source}"] = {"value": value}
    for version, result in latest.items():
        if ":" in version:
            model, source = version.split(":")
            auc.add_metric([model, source], result["value"])
            continue
        share.add_metric([version], result["drift"]["share"])
        if result["drift"]["score"]["value"] is not None:
            score.add_metric([version], result["drift"]["score"]["value"])
        if result["performance"]["coverage"] is not None:
            coverage.add_metric([version], result["performance"]["coverage"])
        for feature in result["drift"]["features"]:
            if feature["value"] is not None:
                drift.add_metric([version, feature["feature"], feature["method"]], feature["value"])
            drifted.add_metric([version, feature["feature"]], float(feature["drifted"]))
    alerts = GaugeMetricFamily("churn_monitor_open_alerts", "Alerts firing", labels=["severity"])
    for severity in ("info", "warning", "critical"):
        alerts.add_metric([severity], open_alerts.get(severity, 0))
    run = GaugeMetricFamily("churn_monitor_last_run_timestamp_seconds", "When the last monitoring run ended")
    if last_run is not None:
        run.add_metric([], datetime.fromisoformat(last_run).timestamp())
    return [drift, drifted, share, score, auc, coverage, alerts, run]
