"""The model server's /metrics exports the monitoring store's latest results as gauges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from churn_mlops.data.spec import load_spec
from churn_mlops.monitoring.job import run_monitor
from churn_mlops.monitoring.simulate import simulate
from churn_mlops.serving.app import create_app
from tests.integration.serving_fixtures import TrainedHome
from tests.integration.test_monitoring import monitored_home, settings_for, sqlite_url

__all__ = ["monitored_home"]


@pytest.mark.slow
def test_metrics_exports_the_latest_results(monitored_home: TrainedHome, tmp_path: Path) -> None:
    settings = settings_for(monitored_home, sqlite_url(tmp_path))
    spec = load_spec()
    simulate(settings, spec, days=3, per_day=1500, drift_from_day=0, drift=0.6, now=datetime.now(UTC))
    windows = {w["start"]: w for w in run_monitor(settings, spec)["windows"]}
    with TestClient(create_app(settings)) as client:
        text = client.get("/metrics").text
    assert 'churn_monitor_feature_drifted{feature="contract",model_version="1"} 1.0' in text
    assert 'churn_monitor_drift_share{model_version="1"}' in text
    assert 'churn_monitor_roc_auc{model_version="1",source="estimated"}' in text
    assert 'churn_monitor_open_alerts{severity="warning"}' in text
    last_run = [
        line for line in text.splitlines() if line.startswith("churn_monitor_last_run_timestamp_seconds")
    ]
    assert float(last_run[0].split()[-1]) == pytest.approx(datetime.now(UTC).timestamp(), abs=120)
    yesterday = windows[(datetime.now(UTC).date() - timedelta(days=1)).isoformat()]  # today's is partial
    psi = {f["feature"]: f["psi"] for f in yesterday["drift"]["features"]}["contract"]
    exported = _gauge(text, 'churn_monitor_feature_psi{feature="contract",model_version="1"}')
    assert exported == pytest.approx(psi, rel=1e-9)


def _gauge(text: str, name: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(name + " ")).split()[-1])
