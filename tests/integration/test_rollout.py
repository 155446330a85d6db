"""Shadow rollouts: the champion answers, the challenger is scored beside it, every server follows."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from churn_mlops.data.lake import Lake
from churn_mlops.data.spec import load_spec
from churn_mlops.errors import ConfigError, NotFoundError
from churn_mlops.models.registry import Registry
from churn_mlops.pipeline.rollout import rollout_status, start_rollout, stop_rollout
from churn_mlops.pipeline.training import train_and_register
from churn_mlops.serving.app import create_app
from churn_mlops.settings import RegistrySettings, Settings, TrainingSettings
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
        assert {"requests", "agreement"} <= set(status["models"]["challenger"])
        churn("rollout", "start", "--json", code=2)  # one at a time
        churn("rollout", "stop")
        assert json.loads(churn("rollout", "status", "--json"))["running"] is False
    finally:
        get_settings.cache_clear()
