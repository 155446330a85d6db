"""The closed loop end to end: drifted, labelled traffic in; a retrained, gated version out,
once; its lock; and the scheduler's checks of the command line it will run."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import typer

import churn_mlops.cli
from churn_mlops.data.lake import Lake
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import ConfigError, ModelNotFoundError
from churn_mlops.loop.job import LOCK, run_loop
from churn_mlops.loop.schedule import check_command, run_once
from churn_mlops.models.registry import Registry
from churn_mlops.monitoring import tables
from churn_mlops.monitoring.simulate import simulate
from churn_mlops.monitoring.store import LockHeldError, MonitorStore
from churn_mlops.settings import Settings, get_settings
from tests.commands import churn, runner
from tests.integration.serving_fixtures import TrainedHome, make_trained_home

pytestmark = pytest.mark.slow
EXIT_CODES = {"promoted": 10, "rejected": 11}


@pytest.fixture(scope="module")
def loop_home(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """A trained home of its own: the loop registers new versions and may move the champion."""
    return make_trained_home(tmp_path_factory.mktemp("loop"))


def settings_for(home: TrainedHome, tmp_path: Path, **loop: Any) -> Settings:
    """Settings on the trained home with a serving database of the test's own."""
    serving = {"database_url": f"sqlite:///{tmp_path / 'serving.db'}"}
    return Settings(home=home.home, serving=serving, loop=loop)


def drifted_traffic(settings: Settings, spec: DatasetSpec, seed: int, days: int = 12) -> dict[str, Any]:
    """Days of predictions that drift from the middle on, with the outcomes already due."""
    return simulate(settings, spec, days=days, per_day=800, drift_from_day=days // 2, drift=0.8, seed=seed)


def version_numbers(settings: Settings) -> list[str]:
    return [v.version for v in Registry.from_settings(settings).versions()]


def loop_records(settings: Settings) -> list[dict[str, Any]]:
    if not settings.audit_log.exists():
        return []
    records = [json.loads(line) for line in settings.audit_log.read_text().splitlines()]
    return [r for r in records if str(r.get("action", "")).startswith("loop: ")]


def churn_command_line() -> Any:
    """The `churn` command group as the scheduler checks command lines against it."""
    return typer.main.get_command(churn_mlops.cli.app)


def lake_rows(settings: Settings, data_version: str) -> pl.DataFrame:
    lake = Lake(settings.lake_dir)
    return lake.read(lake.get(data_version))


def test_drift_retrains_once_on_the_labelled_and_the_champions_rows(
    loop_home: TrainedHome, tmp_path: Path, spec: DatasetSpec
) -> None:
    settings = settings_for(loop_home, tmp_path)
    simulated = drifted_traffic(settings, spec, seed=1)
    champion = Registry.from_settings(settings).champion()
    assert champion is not None
    before, audited = version_numbers(settings), len(loop_records(settings))

    dry = run_loop(settings, spec, dry_run=True)
    assert {"drift_share", "new_labels"} <= set(dry.to_json()["fired"])
    assert (dry.outcome, dry.version) == ("kept", None)
    assert dry.reason.startswith("dry run")
    assert version_numbers(settings) == before
    assert len(loop_records(settings)) == audited

    result = run_loop(settings, spec)
    assert version_numbers(settings) == [*before, result.version]
    new = Registry.from_settings(settings).resolve(str(result.version))
    assert result.data_version is not None
    assert new.tags["data_version"] == result.data_version
    rows = lake_rows(settings, result.data_version)
    old = lake_rows(settings, champion.tags["data_version"])
    assert result.rows == {"labelled": simulated["labels"], "kept": old.height}
    assert result.rows["labelled"] + result.rows["kept"] == rows.height
    assert set(old["customer_id"]) <= set(rows["customer_id"])
    assert result.outcome in EXIT_CODES
    assert result.reason
    expected_champion = result.version if result.outcome == "promoted" else champion.version
    assert Registry.from_settings(settings).champion().version == expected_champion  # type: ignore[union-attr]
    record = loop_records(settings)[-1]
    assert record["action"] == f"loop: {result.outcome}"
    assert (record["version"], record["data_version"]) == (result.version, result.data_version)
    assert "drift_share" in record["rules"]

    again = run_loop(settings, spec)
    assert version_numbers(settings) == [*before, result.version]
    assert again.outcome == "kept"
    assert not again.retrain or "already trained on data version" in again.reason


def test_without_keep_training_data_the_loop_trains_on_labelled_customers_only(
    loop_home: TrainedHome, tmp_path: Path, spec: DatasetSpec
) -> None:
    settings = settings_for(loop_home, tmp_path, keep_training_data=False)
    simulated = drifted_traffic(settings, spec, seed=2, days=10)
    result = run_loop(settings, spec)
    assert result.rows == {"labelled": simulated["labels"], "kept": 0}
    assert result.data_version is not None
    rows = lake_rows(settings, result.data_version)
    assert rows.height == simulated["labels"]
    assert not rows["customer_id"].str.starts_with("S21-").any()  # make_trained_home's customers (seed 21)


def test_a_run_holding_the_lock_stops_another_with_exit_code_9(
    loop_home: TrainedHome, tmp_path: Path, spec: DatasetSpec
) -> None:
    settings = settings_for(loop_home, tmp_path)
    store = MonitorStore(settings.serving_database_url)
    try:
        with (
            store.lock(LOCK),
            pytest.raises(LockHeldError, match="another loop run holds the lock") as caught,
        ):
            run_loop(settings, spec)
    finally:
        store.close()
    assert caught.value.exit_code == 9
    assert run_loop(settings, spec).reason == "no retraining rule fired"  # the lock was released


def test_a_lock_left_by_a_process_that_ended_is_taken_over(
    loop_home: TrainedHome, tmp_path: Path, spec: DatasetSpec
) -> None:
    settings = settings_for(loop_home, tmp_path)
    ended = subprocess.Popen(["true"])
    ended.wait()
    holder = json.dumps({"host": socket.gethostname(), "pid": ended.pid, "at": tables.now_text()})
    store = MonitorStore(settings.serving_database_url)
    try:
        with store.engine.begin() as connection:
            connection.execute(
                tables.state.insert().values(name=LOCK, value=holder, updated_at=tables.now_text())
            )
        result = run_loop(settings, spec)
        assert store.get_state(LOCK) is None
    finally:
        store.close()
    assert result.reason == "no retraining rule fired"


def test_without_a_champion_the_loop_says_to_run_the_pipeline(tmp_path: Path, spec: DatasetSpec) -> None:
    settings = Settings(home=tmp_path / "churn-home")
    with pytest.raises(ModelNotFoundError, match="churn pipeline run"):
        run_loop(settings, spec)


@pytest.fixture
def loop_env(loop_home: TrainedHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The CLI pointed at the loop's home, its own serving database, and a gate every model passes."""
    monkeypatch.setenv("CHURN_HOME", str(loop_home.home))
    monkeypatch.setenv("CHURN_SERVING__DATABASE_URL", f"sqlite:///{tmp_path / 'serving.db'}")
    monkeypatch.setenv("CHURN_REGISTRY__MIN_IMPROVEMENT", "-1")
    monkeypatch.setenv("CHURN_REGISTRY__MAX_REGRESSION", "1")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_cli_detailed_exit_codes_follow_the_outcome(loop_env: Settings, spec: DatasetSpec) -> None:
    quiet = json.loads(churn("loop", "run", "--json", "--detailed-exit-codes"))
    assert (quiet["retrain"], quiet["fired"], quiet["outcome"]) == (False, [], "kept")

    drifted_traffic(loop_env, spec, seed=3, days=8)
    done = runner.invoke(churn_mlops.cli.app, ["loop", "run", "--json", "--detailed-exit-codes"])
    document = json.loads(done.stdout)
    assert document["outcome"] == "promoted"  # the lenient gate
    assert done.exit_code == EXIT_CODES[document["outcome"]]
    assert Registry.from_settings(loop_env).champion().version == document["version"]  # type: ignore[union-attr]


@pytest.mark.parametrize("line", ["loop run", "monitor run", "batch score --input a.csv --output b.parquet"])
def test_the_scheduler_accepts_a_command_churn_accepts(line: str) -> None:
    check_command(churn_command_line(), line.split())


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("monitor sprint", "churn has no command 'monitor sprint'"),
        ("monitor run --bogus", "No such option: --bogus"),
        ("monitor", "names a group"),
    ],
)
def test_the_scheduler_refuses_a_command_churn_would_refuse(line: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        check_command(churn_command_line(), line.split())


def test_schedule_refuses_a_bad_cron_expression_with_exit_code_2() -> None:
    error = churn("loop", "schedule", "--cron", "not cron", code=2)
    assert error.strip().splitlines()[-1].startswith("error: --cron 'not cron' is not a cron expression")


def test_schedule_says_only_what_is_wrong_with_a_bad_cron_expression() -> None:
    error = churn("loop", "schedule", "--cron", "not cron", code=2)
    assert len(error.strip().splitlines()) == 1


def test_run_once_runs_churn_in_a_child_process() -> None:
    assert run_once(["--help"]) == 0
    assert run_once(["no-such-command"]) == 2


def test_a_champion_trained_on_snapshots_over_time_keeps_each_customers_newest_row(
    tmp_path: Path, spec: DatasetSpec
) -> None:
    from churn_mlops.data.history import history
    from churn_mlops.data.ingest import ingest
    from churn_mlops.data.sinks import write_frames
    from churn_mlops.data.sources import Source
    from churn_mlops.pipeline.training import train_and_register

    settings = Settings(
        home=tmp_path / "churn-home", serving={"database_url": f"sqlite:///{tmp_path / 'serving.db'}"}
    )
    snapshots = tmp_path / "snapshots.parquet"
    write_frames(history(600, days=60, seed=5), Source(str(snapshots)))
    lake = Lake(settings.lake_dir)
    ingested = ingest(Source(str(snapshots)), spec, lake=lake, quarantine_dir=settings.quarantine_dir)
    assert ingested.version is not None
    trained_on = lake.read(ingested.version)
    assert trained_on.height > trained_on["customer_id"].n_unique()  # several snapshots a customer
    train_and_register(trained_on, ingested.version, spec, settings)
    simulated = drifted_traffic(settings, spec, seed=2)

    result = run_loop(settings, spec)

    assert result.outcome in EXIT_CODES, result.reason
    assert result.rows == {"labelled": simulated["labels"], "kept": trained_on["customer_id"].n_unique()}
