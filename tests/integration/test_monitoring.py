"""The monitoring job end to end: simulated traffic, drift from the right day, realised and
estimated performance, alerts stored once and resolved, webhooks retried, gauges on /metrics."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from churn_mlops.data.spec import load_spec
from churn_mlops.errors import MonitoringError
from churn_mlops.monitoring import alerts as rules
from churn_mlops.monitoring.alerts import notify
from churn_mlops.monitoring.job import decode_inputs, run_monitor
from churn_mlops.monitoring.simulate import simulate
from churn_mlops.monitoring.store import MonitorStore, MonitorStoreError
from churn_mlops.settings import AlertRule, Settings
from tests.conftest import POSTGRES_URL
from tests.integration.serving_fixtures import TrainedHome, make_trained_home

DRIFTED = {"contract", "internet_service", "monthly_charges"}
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def monitored_home(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """A trained home of its own: simulated traffic must not reach the serving tests' log."""
    return make_trained_home(tmp_path_factory.mktemp("monitoring"), rows=7043)  # as `make run` trains


def settings_for(home: TrainedHome, database_url: str, **monitoring: Any) -> Settings:
    """Settings on the trained home with their own serving database."""
    return Settings(home=home.home, serving={"database_url": database_url}, monitoring=monitoring or {})


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'serving.db'}"


def by_start(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["start"]: w for w in summary["windows"]}


@pytest.mark.slow
def test_drift_appears_on_day_16_and_only_from_there(monitored_home: TrainedHome, tmp_path: Path) -> None:
    settings = settings_for(monitored_home, sqlite_url(tmp_path))
    spec = load_spec()
    simulated = simulate(
        settings, spec, days=30, per_day=2000, drift_from_day=15, drift=0.6, label_delay_days=7, now=NOW
    )
    assert simulated["predictions"] == 60_000
    summary = run_monitor(settings, spec, now=NOW)
    windows = by_start(summary)
    assert len(windows) == 30
    days = sorted(windows)
    for index, day in enumerate(days, start=1):
        drifted = set(windows[day]["drift"]["drifted_features"])
        if index >= 16:
            assert drifted >= DRIFTED, (day, drifted)
        else:
            assert len(drifted) <= 1, (day, drifted)
    fired = {(a["rule"], a["window"]) for a in summary["alerts"] if a["state"] == "firing"}
    assert not {w for rule, w in fired if rule == "data_drift"} & set(days[:15])
    assert set(days[15:]) <= {w for rule, w in fired if rule == "data_drift"}


@pytest.mark.slow
def test_undrifted_traffic_fires_no_drift_and_estimates_match_labels(
    monitored_home: TrainedHome, tmp_path: Path
) -> None:
    settings = settings_for(monitored_home, sqlite_url(tmp_path))
    spec = load_spec()
    simulate(settings, spec, days=30, per_day=2000, label_delay_days=7, now=NOW)
    summary = run_monitor(settings, spec, now=NOW)
    assert not [a for a in summary["alerts"] if a["rule"] in ("data_drift", "score_drift")]
    labelled = [w for w in summary["windows"] if w["performance"]["realised"]]
    assert 20 <= len(labelled) <= 24  # labels arrive 7 days after their prediction
    waiting = [w for w in summary["windows"] if not w["performance"]["realised"]]
    assert all(w["performance"]["estimated"]["roc_auc"] for w in waiting)
    realised = [w["performance"]["realised"]["roc_auc"] for w in labelled]
    estimated = [w["performance"]["estimated"]["roc_auc"] for w in labelled]
    assert abs(sum(realised) / len(realised) - sum(estimated) / len(estimated)) < 0.02
    assert all(abs(r - e) < 0.05 for r, e in zip(realised, estimated, strict=True))
    for window in labelled:
        slices = {s["slice"]: s for s in window["performance"]["slices"]}
        contracts = [s for key, s in slices.items() if key.startswith("contract=")]
        assert sum(s["predictions"] for s in contracts) == window["predictions"]
        assert sum(s["labels"] for s in contracts) == window["performance"]["labels"]
        assert slices["contract=Month-to-month"]["realised"]["roc_auc"] is not None
        assert {"tenure=<12", "tenure=12-24", "tenure=24-48", "tenure=>=48"} <= slices.keys()
    complete = [w for w in labelled if w["performance"]["coverage"] is not None]
    assert max(w["performance"]["coverage"] for w in complete) == pytest.approx(1.0)


@pytest.mark.slow
def test_a_second_run_reads_nothing_twice_and_keeps_one_alert_per_window(
    monitored_home: TrainedHome, tmp_path: Path
) -> None:
    settings = settings_for(monitored_home, sqlite_url(tmp_path))
    spec = load_spec()
    simulate(settings, spec, days=10, per_day=1500, drift_from_day=5, drift=0.6, now=NOW)
    first = run_monitor(settings, spec, now=NOW)
    second = run_monitor(settings, spec, now=NOW)
    assert first["predictions_read"] == 15_000
    assert second["predictions_read"] == 0
    assert second["alerts"] == []  # nothing changed, nothing fired again
    assert second["windows"] == []  # nothing they read has changed
    days = sorted(w["start"] for w in first["windows"])
    store = MonitorStore(settings.serving_database_url)
    try:
        late = datetime.fromisoformat(days[1]).replace(tzinfo=UTC) + timedelta(hours=1)
        outcome = pl.DataFrame({"customer_id": ["S1-000000000"], "churned": [True]})
        store.outcomes.add_labels(
            outcome.with_columns(observed_ms=pl.lit(int(late.timestamp() * 1000))), "late"
        )
        third = run_monitor(settings, spec, now=NOW)
        stored = store.alerts()
    finally:
        store.close()
    assert sorted(w["start"] for w in third["windows"]) == days[:2]  # windows whose predictions it may match
    keys = [(a["rule"], a["kind"], a["window_start"], a["model_version"]) for a in stored]
    assert len(keys) == len(set(keys)) > 0


@pytest.mark.slow
def test_a_week_is_the_sum_of_its_days(monitored_home: TrainedHome, tmp_path: Path) -> None:
    settings = settings_for(monitored_home, sqlite_url(tmp_path))
    spec = load_spec()
    simulate(settings, spec, days=12, per_day=1000, drift_from_day=6, drift=0.6, now=NOW)
    days = run_monitor(settings, spec, kind="1d", now=NOW)["windows"]
    weeks = run_monitor(settings, spec, kind="7d", now=NOW)["windows"]
    assert [w["start"] for w in weeks] == ["2026-11-23", "2026-11-30", "2026-12-07"]  # Mondays
    for week in weeks:
        inside = [d for d in days if week["start"] <= d["start"] < week["end"]]
        assert week["predictions"] == sum(d["predictions"] for d in inside)
        assert week["performance"]["labels"] == sum(d["performance"]["labels"] for d in inside)
    assert set(weeks[1]["drift"]["drifted_features"]) >= DRIFTED


@pytest.mark.slow
def test_a_window_too_small_to_judge_neither_fires_nor_clears(
    monitored_home: TrainedHome, tmp_path: Path
) -> None:
    settings = settings_for(monitored_home, sqlite_url(tmp_path))
    spec = load_spec()
    just_after_midnight = datetime(2026, 12, 7, 0, 10, tzinfo=UTC)
    simulate(
        settings, spec, days=2, per_day=1500, drift_from_day=0, drift=0.6, now=just_after_midnight - HOUR
    )
    simulate(settings, spec, days=1, per_day=20, drift_from_day=0, drift=0.6, seed=1, now=just_after_midnight)
    summary = run_monitor(settings, spec, now=just_after_midnight)
    today = by_start(summary)["2026-12-07"]
    assert 0 < today["predictions"] < settings.monitoring.min_window_rows
    drift = {a["window"]: a["state"] for a in summary["alerts"] if a["rule"] == "data_drift"}
    assert drift == {"2026-12-05": "firing", "2026-12-06": "firing"}


def test_an_alert_fires_once_and_resolves_when_a_later_window_clears(tmp_path: Path) -> None:
    store = MonitorStore(sqlite_url(tmp_path))
    rule = AlertRule(name="drift", metric="drift.share", threshold=0.1)
    starts = ["2026-11-01", "2026-11-02", "2026-11-03"]
    try:
        with store.engine.begin() as connection:
            fired = rules.apply(connection, rule, rules.Series("1d", "1", starts, [0.0, 0.3, 0.4]))
            again = rules.apply(connection, rule, rules.Series("1d", "1", starts, [0.0, 0.3, 0.4]))
        assert [(a["window_start"], a["state"]) for a in fired] == [
            ("2026-11-02", "firing"),
            ("2026-11-03", "firing"),
        ]
        assert again == []
        with store.engine.begin() as connection:
            cleared = rules.apply(
                connection, rule, rules.Series("1d", "1", [*starts, "2026-11-04"], [0.0, 0.3, 0.4, 0.05])
            )
        assert sorted((a["window_start"], a["state"]) for a in cleared) == [
            ("2026-11-02", "resolved"),
            ("2026-11-03", "resolved"),
        ]
        assert all(a["resolved_at"] for a in store.alerts())
    finally:
        store.close()


def test_one_run_at_a_time(monitored_home: TrainedHome, tmp_path: Path) -> None:
    settings = settings_for(monitored_home, sqlite_url(tmp_path))
    store = MonitorStore(settings.serving_database_url)
    try:
        with store.lock(), pytest.raises(MonitorStoreError, match="another monitoring run holds the lock"):
            run_monitor(settings, load_spec(), now=NOW)
        assert run_monitor(settings, load_spec(), now=NOW)["windows"] == []  # the lock was released
    finally:
        store.close()


class Webhook(BaseHTTPRequestHandler):
    """Answers with the server's queued statuses (200 when none are left) and records bodies."""

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.bodies.append(json.loads(self.rfile.read(length)))  # type: ignore[attr-defined]
        statuses = self.server.statuses  # type: ignore[attr-defined]
        self.send_response(statuses.pop(0) if statuses else 200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def webhook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    server.bodies, server.statuses = [], []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_failing_webhook_is_retried_on_the_next_run(tmp_path: Path, webhook: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{webhook.server_address[1]}/hooks/secret"
    settings = Settings(
        home=tmp_path,
        serving={"database_url": sqlite_url(tmp_path)},
        monitoring={"webhooks": [url], "webhook_retries": 1, "webhook_timeout": 2},
    )
    store = MonitorStore(settings.serving_database_url)
    rule = AlertRule(name="drift", metric="drift.share", threshold=0.1, severity="critical")
    try:
        with store.engine.begin() as connection:
            rules.apply(connection, rule, rules.Series("1d", "1", ["2026-11-02"], [0.3]))
        webhook.statuses += [503, 503]  # type: ignore[attr-defined]
        assert notify(store, settings) == {"sent": 0, "failed": 1}
        assert store.alerts()[0]["notified"] is None
        assert notify(store, settings) == {"sent": 1, "failed": 0}
        assert store.alerts()[0]["notified"] == "firing"
        assert notify(store, settings) == {"sent": 0, "failed": 0}  # delivered once
    finally:
        store.close()
    bodies = webhook.bodies  # type: ignore[attr-defined]
    assert len(bodies) == 3
    assert "FIRING drift" in bodies[-1]["text"]
    assert bodies[-1]["severity"] == "critical"


@pytest.fixture
def postgres_url(postgres_engine: sa.Engine) -> Iterator[str]:
    """A URL on a fresh schema of the real PostgreSQL, dropped afterwards."""
    schema = f"churn_mon_{uuid.uuid4().hex[:10]}"
    with postgres_engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with postgres_engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.mark.postgres
@pytest.mark.slow
def test_postgresql_is_the_store_at_scale(monitored_home: TrainedHome, postgres_url: str) -> None:
    settings = settings_for(monitored_home, postgres_url)
    spec = load_spec()
    now = datetime.now(UTC) - timedelta(minutes=5)  # rows older than the commit lag
    simulate(settings, spec, days=10, per_day=1200, drift_from_day=6, drift=0.6, label_delay_days=3, now=now)
    summary = run_monitor(settings, spec, now=datetime.now(UTC))
    assert summary["predictions_read"] == 12_000
    windows = sorted(summary["windows"], key=lambda w: w["start"])
    assert set(windows[-2]["drift"]["drifted_features"]) >= DRIFTED
    assert not windows[0]["drift"]["drifted_features"]
    assert windows[0]["performance"]["realised"]["roc_auc"] > 0.7
    assert any(a["rule"] == "data_drift" for a in summary["alerts"])


@pytest.mark.slow
def test_an_unreadable_registry_stops_the_run_before_the_watermark_moves(
    monitored_home: TrainedHome, tmp_path: Path
) -> None:
    settings = settings_for(monitored_home, sqlite_url(tmp_path))
    spec = load_spec()
    simulate(settings, spec, days=2, per_day=500, now=NOW)
    elsewhere = settings.model_copy(
        update={
            "registry": settings.registry.model_copy(update={"tracking_uri": sqlite_url(tmp_path / "empty")})
        }
    )
    with pytest.raises(MonitoringError, match="cannot read the model registry"):
        run_monitor(elsewhere, spec, now=NOW)
    assert run_monitor(settings, spec, now=NOW)["predictions_read"] == 1000  # nothing was skipped


def test_a_logged_value_of_another_type_reads_as_missing() -> None:
    logged = pl.Series(['{"customer_id": "a", "tenure": "twelve", "contract": 3}', '{"tenure": 4}'])
    decoded = decode_inputs(logged, load_spec())
    assert decoded.get_column("tenure").to_list() == [None, 4.0]
    assert decoded.get_column("customer_id").to_list() == ["a", None]
