"""Shadow rollouts: the champion answers, the challenger is scored beside it, every server follows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from churn_mlops.data.lake import Lake
from churn_mlops.data.spec import load_spec
from churn_mlops.errors import ConfigError, NotFoundError
from churn_mlops.models.registry import Registry
from churn_mlops.pipeline.rollout import promote_rollout, rollout_status, start_rollout, stop_rollout
from churn_mlops.pipeline.training import train_and_register
from churn_mlops.serving.app import create_app
from churn_mlops.serving.keys import KeyStore
from churn_mlops.serving.model import LoadedModel
from churn_mlops.settings import RegistrySettings, RolloutSettings, Settings, TrainingSettings
from tests.commands import churn
from tests.integration.serving_fixtures import TrainedHome, make_trained_home

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainedHome, Settings]:
    """A champion (v1, LightGBM) and a challenger (v2, the logistic regression on the same data,
    kept out of the champion's place by a gate that asks for more than it can give)."""
    home = make_trained_home(tmp_path_factory.mktemp("rollout"))
    training = TrainingSettings(candidates=["logistic_regression"])
    strict = Settings(home=home.home, training=training, registry=RegistrySettings(min_improvement=1.0))
    lake = Lake(strict.lake_dir)
    version = lake.versions()[-1]
    outcome = train_and_register(lake.read(version), version, load_spec(), strict)
    assert (outcome.version.version, outcome.decision.promote) == ("2", False)
    return home, Settings(home=home.home)


@contextmanager
def _serving_a_canary(settings: Settings, fraction: float) -> Iterator[tuple[TestClient, Any]]:
    """A server (test client) whose rollouts follow a canary of v2 answering `fraction`."""
    with TestClient(create_app(settings)) as client:
        rollouts = client.app.state.services.rollouts  # type: ignore[attr-defined]
        start_rollout(settings, mode="canary", model="2", fraction=fraction, actor="user:test")
        _wait(lambda: rollouts.canary is not None)
        yield client, rollouts


def _wait(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the servers did not follow the rollout in time"
        time.sleep(0.05)


def test_the_champion_answers_while_the_challenger_is_scored_beside_it(two_versions) -> None:  # type: ignore[no-untyped-def]
    home, settings = two_versions
    headers = {"X-API-Key": home.predict_key}
    with TestClient(create_app(settings)) as client:
        rollouts = client.app.state.services.rollouts  # type: ignore[attr-defined]
        started = start_rollout(settings, model="challenger", actor="user:test")
        assert (started["model_version"], started["champion_version"]) == ("2", "1")
        _wait(lambda: rollouts.shadow is not None)
        answers = [client.post("/predict", json=c, headers=headers).json() for c in home.customers[:10]]
        batch = client.post("/predict/batch", json=home.customers[10:20], headers=headers).json()[
            "predictions"
        ]
        stop_rollout(settings, actor="user:test")
        _wait(lambda: rollouts.shadow is None)  # stopping lets the shadow finish what it was handed
        after = client.post("/predict", json=home.customers[0], headers=headers).json()

    served = answers + batch
    assert {a["model_version"] for a in [*served, after]} == {"1"}  # the champion answered every one
    engine = sa.create_engine(settings.serving_database_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM shadow_predictions ORDER BY id")).mappings().all()
    engine.dispose()
    assert len(rows) == 20  # one per customer scored while the shadow ran, none after it stopped
    assert {r["model_version"] for r in rows} == {"2"}
    by_request = {a["request_id"]: a for a in served}
    assert {r["request_id"] for r in rows} == set(by_request)
    _, challenger = Registry.from_settings(settings).load("2")
    expected = challenger.predict_proba(pl.DataFrame(home.customers[:20]))
    assert [r["probability"] for r in rows] == pytest.approx(list(expected), abs=1e-9)
    for row in rows:
        assert row["champion_probability"] == by_request[row["request_id"]]["churn_probability"]

    status = rollout_status(settings)
    assert status["running"] is False
    challenger_figures = status["models"]["challenger"]
    assert challenger_figures["requests"] == 20
    assert status["models"]["champion"]["p99_ms"] > 0  # the answers' own latency, from the log
    agreement = np.mean([r["prediction"] == r["champion_prediction"] for r in rows])
    assert challenger_figures["agreement"] == pytest.approx(agreement)
    audit = [json.loads(line) for line in settings.audit_log.read_text().splitlines()]
    assert [a["action"] for a in audit[-2:]] == ["rollout started", "rollout stopped"]


def test_a_rollout_is_refused_when_it_cannot_make_sense(two_versions) -> None:  # type: ignore[no-untyped-def]
    _, settings = two_versions
    with pytest.raises(ConfigError, match="is the champion"):
        start_rollout(settings, model="champion", actor="user:test")
    with pytest.raises(NotFoundError, match="no rollout is running"):
        stop_rollout(settings, actor="user:test")
    start_rollout(settings, model="2", actor="user:test")
    try:
        with pytest.raises(ConfigError, match="churn rollout stop"):
            start_rollout(settings, model="2", actor="user:test")
    finally:
        stop_rollout(settings, actor="user:test")


def test_the_cli_starts_reports_and_stops_a_shadow(two_versions, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from churn_mlops.settings import get_settings

    home, _ = two_versions
    monkeypatch.setenv("CHURN_HOME", str(Path(home.home)))
    get_settings.cache_clear()
    try:
        started = json.loads(churn("rollout", "start", "--mode", "shadow", "--json"))
        assert started["model_version"] == "2"
        status = json.loads(churn("rollout", "status", "--json"))
        assert status["running"] is True
        assert set(status["models"]) == {"champion", "challenger"}
        assert {"requests", "errors", "agreement"} <= set(status["models"]["challenger"])
        assert {"requests", "errors"} <= set(status["models"]["champion"])
        churn("rollout", "start", "--json", code=2)  # one at a time
        churn("rollout", "stop")
        assert json.loads(churn("rollout", "status", "--json"))["running"] is False
    finally:
        get_settings.cache_clear()


def test_a_canary_answers_its_share_of_customers_the_same_way_every_time(two_versions) -> None:  # type: ignore[no-untyped-def]
    home, settings = two_versions
    headers = {"X-API-Key": home.predict_key}
    customers = home.customers[:20]
    assert all(c.get("customer_id") for c in customers)
    with _serving_a_canary(settings, 0.5) as (client, rollouts):
        first = [client.post("/predict", json=c, headers=headers).json() for c in customers]
        again = client.post("/predict/batch", json=customers, headers=headers).json()["predictions"]
        _wait(lambda: rollout_status(settings)["models"]["challenger"].get("agreement") is not None)
        status = rollout_status(settings)
        stop_rollout(settings, actor="user:test")
        _wait(lambda: rollouts.canary is None)
        after = [client.post("/predict", json=c, headers=headers).json() for c in customers[:5]]

    versions = [a["model_version"] for a in first]
    assert set(versions) == {"1", "2"}  # some customers each way
    assert [a["model_version"] for a in again] == versions  # the same customer, the same model
    _, challenger = Registry.from_settings(settings).load("2")
    for answer, customer in zip(first, customers, strict=True):
        if answer["model_version"] == "2":  # answered by the canary's own model, not relabelled
            expected = challenger.predict_proba(pl.DataFrame([customer]))[0]
            assert answer["churn_probability"] == pytest.approx(expected, abs=1e-12)
    assert {a["model_version"] for a in after} == {"1"}  # stopped: the champion answers everyone
    models = status["models"]
    assert models["challenger"]["requests"] == 2 * versions.count("2")
    assert models["champion"]["requests"] == 2 * versions.count("1")
    assert models["challenger"]["p99_ms"] is not None
    assert 0 <= models["challenger"]["agreement"] <= 1  # the champion's decision, taken beside the canary's
    assert models["challenger"]["errors"] == 0


def test_a_canary_share_is_stable_and_close_to_its_fraction() -> None:
    from churn_mlops.serving.rollout import Canary

    canary = Canary(model=None, fraction=0.2)  # type: ignore[arg-type]
    ids = [f"C-{i:06d}" for i in range(20_000)]
    taken = [canary.takes(i, "request") for i in ids]
    assert abs(sum(taken) / len(ids) - 0.2) < 0.01
    assert taken == [canary.takes(i, "another request") for i in ids]  # by customer, not by request
    assert canary.takes(None, "r-1") == canary.takes(None, "r-1")


def test_promoting_a_rollout_makes_its_model_the_champion(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = make_trained_home(tmp_path_factory.mktemp("promote"))
    training = TrainingSettings(candidates=["logistic_regression"])
    strict = Settings(home=home.home, training=training, registry=RegistrySettings(min_improvement=1.0))
    lake = Lake(strict.lake_dir)
    version = lake.versions()[-1]
    train_and_register(lake.read(version), version, load_spec(), strict)
    settings = Settings(home=home.home)
    start_rollout(settings, mode="canary", model="2", fraction=0.2, actor="user:test")
    promoted = promote_rollout(settings, actor="user:test")
    assert promoted["outcome"] == "promoted"
    assert Registry.from_settings(settings).champion().version == "2"  # type: ignore[union-attr]
    assert rollout_status(settings)["running"] is False


class _FailingModel(LoadedModel):
    """A canary model whose every scoring fails, as a model the server cannot use would."""

    def score(self, records):  # type: ignore[no-untyped-def]
        raise RuntimeError("injected canary failure")


def test_a_failing_canary_is_rolled_back_with_no_failed_request(two_versions) -> None:  # type: ignore[no-untyped-def]
    home, settings = two_versions
    headers = {"X-API-Key": home.predict_key}
    guarded = settings.model_copy(update={"rollout": RolloutSettings(min_requests=20, poll_seconds=0.2)})
    with _serving_a_canary(guarded, 0.9) as (client, rollouts):
        real = rollouts.canary.model
        rollouts.canary.model = _FailingModel(real.info, real.predictor, real.loaded_at)
        answers = []
        for _ in range(3):
            answers += [client.post("/predict", json=c, headers=headers) for c in home.customers]
        _wait(lambda: not rollout_status(guarded)["running"])
        viewer, _ = KeyStore(guarded.serving_database_url).create(f"viewer-{time.time_ns()}", ["view"])
        page = client.get("/dashboard/data", headers={"X-API-Key": viewer}).json()

    assert {a.status_code for a in answers} == {200}  # not one failed request
    assert {a.json()["model_version"] for a in answers} == {"1"}  # the champion answered them all
    status = rollout_status(guarded)
    rollout = status["rollout"]
    assert status["models"]["challenger"]["errors"] >= 20  # every failed scoring, counted by the server
    assert status["models"]["champion"]["errors"] == 0  # and not one 5xx answer
    assert rollout["outcome"] == "rolled back"
    assert rollout["ended_by"] == "guard"
    assert "canary scorings failed" in rollout["reason"]
    engine = sa.create_engine(guarded.serving_database_url)
    with engine.connect() as connection:
        alert = connection.execute(
            sa.text("SELECT severity, state, message FROM alerts WHERE rule = 'canary_rollback'")
        ).one()
    engine.dispose()
    assert (alert.severity, alert.state) == ("critical", "firing")
    assert "rolled back" in alert.message
    assert page["model"]["rollout"]["outcome"] == "rolled back"  # the dashboard's model panel says so


def test_a_canary_whose_realised_roc_auc_trails_the_champions_is_rolled_back_by_monitoring(
    two_versions,
) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    from churn_mlops.monitoring.job import run_monitor
    from churn_mlops.monitoring.store import MonitorStore

    home, settings = two_versions
    headers = {"X-API-Key": home.predict_key}
    guarded = settings.model_copy(update={"rollout": RolloutSettings(min_labels=20, max_auc_drop=0.05)})
    with _serving_a_canary(guarded, 0.5) as (client, _):
        customers = [
            {**c, "customer_id": f"{c['customer_id']}-{k}"} for k in range(4) for c in home.customers
        ]
        answers = [client.post("/predict", json=c, headers=headers).json() for c in customers]
    time.sleep(0.01)
    # Outcomes that arrive later: the champion's customers churned where it scored them high, the
    # canary's where it scored them low, so the canary ranks its customers the wrong way round.
    median = float(np.median([a["churn_probability"] for a in answers]))
    churned = [(a["churn_probability"] >= median) == (a["model_version"] == "1") for a in answers]
    outcomes = pl.DataFrame(
        {
            "customer_id": [a["customer_id"] for a in answers],
            "churned": churned,
            "observed_ms": [int(time.time() * 1000)] * len(answers),
        }
    )
    store = MonitorStore(guarded.serving_database_url)
    store.outcomes.add_labels(outcomes, "test outcomes")
    store.close()

    later = datetime.now(UTC) + timedelta(minutes=2)  # past the log's commit lag
    summary = run_monitor(guarded, load_spec(), now=later)

    canary = summary["canary"]
    assert canary["models"]["champion"]["roc_auc"] > 0.9
    assert canary["models"]["challenger"]["roc_auc"] < 0.1
    assert min(m["labelled"] for m in canary["models"].values()) >= 20
    assert "realised ROC AUC" in canary["rolled_back"]
    status = rollout_status(guarded)
    assert (status["rollout"]["outcome"], status["rollout"]["ended_by"]) == ("rolled back", "guard")
    assert (
        status["models"]["challenger"]["realised_roc_auc"] < status["models"]["champion"]["realised_roc_auc"]
    )
    engine = sa.create_engine(guarded.serving_database_url)
    with engine.connect() as connection:
        severity = connection.execute(
            sa.text(
                "SELECT severity FROM alerts WHERE rule = 'canary_rollback' AND message LIKE '%realised%'"
            )
        ).scalar_one()
    engine.dispose()
    assert severity == "critical"
