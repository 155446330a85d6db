"""The Spark batch engine: the same scores as the local engine and the API, the same files and errors."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from churn_mlops.data.spec import load_spec
from churn_mlops.data.synthetic import generate
from churn_mlops.data.validation import validate
from churn_mlops.errors import ChecksumError, ConfigError, ModelNotFoundError
from churn_mlops.models.artifacts import load_predictor, predictor_from_files
from churn_mlops.models.registry import Registry
from churn_mlops.monitoring.store import MonitorStore
from churn_mlops.serving.app import create_app
from churn_mlops.settings import BatchSettings, ServingSettings, Settings, get_settings
from tests.commands import churn
from tests.integration.serving_fixtures import TrainedHome

RUN_DATE = "2026-11-29"
VOLATILE = {"engine", "seconds", "rows_per_s", "output", "quarantine_path", "top_path", "compile_seconds"}


def require_spark(*, java: bool = True) -> None:
    """Skip where pyspark (or Java) is missing; in CI that is a failure."""
    if importlib.util.find_spec("pyspark") is None:
        reason = "pyspark is not installed (uv sync --extra spark)"
    elif java and not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        reason = "Java is not installed (Spark needs Java 17 or later)"
    else:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must provide it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local Spark session for the module, split into small partitions; runs reuse it."""
    require_spark()
    from churn_mlops.batch.spark_session import spark_session

    with spark_session(BatchSettings()) as session:
        # Small input splits, so a few thousand rows span many partitions (row numbering across them).
        session.conf.set("spark.sql.files.maxPartitionBytes", str(64 * 1024))
        session.conf.set("spark.sql.files.openCostInBytes", str(64 * 1024))
        yield session


def _score(source: Path, output: Path, *args: str, code: int = 0) -> dict[str, Any]:
    """`churn batch score` on source into output; the JSON summary, or the error text."""
    text = churn(
        "batch", "score", "--input", str(source), "--output", str(output), *args, "--json", code=code
    )
    return json.loads(text) if code == 0 else {"error": text}


def _api_probabilities(home: TrainedHome, source: Path) -> dict[str, float]:
    """Probabilities from POST /predict/batch for the valid customers of a CSV, by customer id."""
    spec = load_spec()
    valid = validate(pl.read_csv(source, infer_schema=False), spec, require_target=False).valid
    customers = valid.drop(spec.target.name, strict=False).to_dicts()
    settings = Settings(home=home.home, serving=ServingSettings(rate_per_second=1000, burst=1000))
    probabilities: dict[str, float] = {}
    with TestClient(create_app(settings)) as client:
        for start in range(0, len(customers), 1000):
            chunk = customers[start : start + 1000]
            response = client.post("/predict/batch", json=chunk, headers={"X-API-Key": home.predict_key})
            assert response.status_code == 200, response.text
            probabilities |= {
                p["customer_id"]: p["churn_probability"] for p in response.json()["predictions"]
            }
    return probabilities


def _probabilities(path: str) -> dict[str, float]:
    scores = pl.read_parquet(path)
    return dict(zip(scores.get_column("customer_id"), scores.get_column("churn_probability"), strict=True))


@pytest.fixture
def bad_csv(tmp_path: Path) -> Path:
    """Generated customers, about 3% of them broken in ways validation quarantines."""
    path = tmp_path / "customers-with-bad-rows.csv"
    pl.concat(list(generate(4000, seed=8, bad_fraction=0.03))).write_csv(path)
    return path


def test_a_missing_pyspark_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from churn_mlops.batch.spark_session import spark_session

    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(ConfigError, match=r"uv sync --extra spark"), spark_session(BatchSettings()):
        pass


def test_a_missing_java_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    require_spark(java=False)
    from pyspark.sql import SparkSession

    from churn_mlops.batch.spark_session import spark_session

    if SparkSession.getActiveSession() is not None:
        pytest.skip("a Spark session is already running in this process")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with (
        pytest.raises(ConfigError, match=r"^the spark engine needs Java 17 or later"),
        spark_session(BatchSettings()),
    ):
        pass


@pytest.mark.slow
def test_broadcast_model_files_are_verified_like_a_version_folder(home: TrainedHome, tmp_path: Path) -> None:
    settings = get_settings()
    registry = Registry.from_settings(settings)
    folder = registry.fetch("champion", tmp_path / "model")
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    customers = {name: [c.get(name) for c in home.customers] for name in home.customers[0]}
    expected = load_predictor(folder).predict_proba(customers)
    assert np.array_equal(predictor_from_files(files).predict_proba(customers), expected)
    with pytest.raises(ChecksumError, match=r"model\.txt: checksum mismatch"):
        predictor_from_files(files | {"model.txt": files["model.txt"] + b"\n"})
    with pytest.raises(ChecksumError, match=r"features\.json: missing"):
        predictor_from_files({k: v for k, v in files.items() if k != "features.json"})
    with pytest.raises(ModelNotFoundError, match="not a model version"):
        predictor_from_files({k: v for k, v in files.items() if k != "checksums.json"})


@pytest.mark.parametrize("which", ["telco", "bad"])
@pytest.mark.slow
@pytest.mark.spark
def test_api_local_and_spark_scores_agree(
    spark: Any, home: TrainedHome, telco_csv: Path, bad_csv: Path, tmp_path: Path, which: str
) -> None:
    source = telco_csv if which == "telco" else bad_csv
    runs, profiles = {}, {}
    for engine in ("local", "spark"):
        runs[engine] = _score(
            source,
            tmp_path / f"{engine}.parquet",
            "--engine",
            engine,
            "--run-date",
            RUN_DATE,
            "--top",
            "20",
            "--top-output",
            str(tmp_path / f"top-{engine}.csv"),
        )
        profiles[engine] = _batch_profile(home)
    local, spark_run = runs["local"], runs["spark"]
    assert local["scorer"] == spark_run["scorer"] == "compiled", "each Spark worker compiles the trees too"
    sums = {engine: _pop_sums(profile) for engine, profile in profiles.items()}
    assert profiles["local"] == profiles["spark"], "Spark's partial profiles add up to the local one"
    assert sums["local"].keys() == sums["spark"].keys()
    assert all(sums["local"][k] == pytest.approx(sums["spark"][k], rel=1e-12) for k in sums["local"])
    assert profiles["local"]["rows"] == local["rows_scored"]
    api = _api_probabilities(home, source)
    by_engine = {engine: _probabilities(run["output"]) for engine, run in runs.items()}
    assert by_engine["local"].keys() == by_engine["spark"].keys() == api.keys()
    assert all(abs(by_engine["local"][c] - api[c]) <= 1e-9 for c in api)
    assert all(abs(by_engine["spark"][c] - api[c]) <= 1e-9 for c in api)
    assert {k: v for k, v in local.items() if k not in VOLATILE} == {
        k: v for k, v in spark_run.items() if k not in VOLATILE
    }
    assert local["rows_in"] == local["rows_scored"] + local["rows_quarantined"] == pl.read_csv(source).height
    frames = {engine: pl.read_parquet(run["output"]).drop("scored_at") for engine, run in runs.items()}
    assert frames["local"].equals(frames["spark"]), "same rows, in the same order"
    assert pl.read_parquet_schema(local["output"]) == pl.read_parquet_schema(spark_run["output"])
    top = {engine: pl.read_csv(run["top_path"]).drop("scored_at") for engine, run in runs.items()}
    assert top["local"].equals(top["spark"])
    if which == "bad":
        quarantined = {engine: pl.read_parquet(run["quarantine_path"]) for engine, run in runs.items()}
        assert quarantined["local"].height > 50
        assert quarantined["local"].equals(quarantined["spark"]), "same row numbers, reasons and raw values"
        assert spark.read.csv(str(source)).rdd.getNumPartitions() > 1, "rows numbered across partitions"
    else:
        assert local["rows_quarantined"] == spark_run["rows_quarantined"] == 0


def _pop_sums(profile: dict[str, Any]) -> dict[str, list[float]]:
    """Take out the probability sums (overall and per slice): float sums depend on batch sizes."""
    sums = {"": profile.pop("decided_sum")}
    for key, counts in profile["slices"].items():
        sums[key] = counts.pop("decided_sum")
    return sums


def _batch_profile(home: TrainedHome) -> dict[str, Any]:
    """The monitoring profile the last batch run stored for RUN_DATE."""
    store = MonitorStore(f"sqlite:///{home.home / 'serving.db'}")
    try:
        stored = [p for p in store.profiles(RUN_DATE, "2026-11-30") if p.source == "batch"]
    finally:
        store.close()
    assert len(stored) == 1
    return stored[0].profile.to_json()


@pytest.mark.slow
@pytest.mark.spark
def test_parquet_folders_keep_the_local_engines_row_order(
    spark: Any, home: TrainedHome, bad_csv: Path, tmp_path: Path
) -> None:
    raw = pl.read_csv(bad_csv, infer_schema=False)
    folder = tmp_path / "customers"
    folder.mkdir()
    # The small file first: on its own, Spark would read the big one first (it packs files by size).
    raw.head(700).write_parquet(folder / "part-a.parquet")
    raw.slice(700).write_parquet(folder / "part-b.parquet")
    runs = {
        engine: _score(folder, tmp_path / f"{engine}.parquet", "--engine", engine)
        for engine in ("local", "spark")
    }
    quarantined = {engine: pl.read_parquet(run["quarantine_path"]) for engine, run in runs.items()}
    assert quarantined["local"].equals(quarantined["spark"])
    scores = {engine: pl.read_parquet(run["output"]).drop("scored_at") for engine, run in runs.items()}
    assert scores["local"].equals(scores["spark"])


@pytest.mark.slow
@pytest.mark.spark
def test_rerunning_a_date_on_spark_replaces_its_output(spark: Any, home: TrainedHome, tmp_path: Path) -> None:
    customers = tmp_path / "customers.csv"
    pl.concat(list(generate(1500, seed=3))).write_csv(customers)
    folder = tmp_path / "scores"
    for run_date in (RUN_DATE, RUN_DATE, "2026-11-30"):
        _score(customers, folder, "--engine", "spark", "--run-date", run_date)
    partitions = sorted(p.parent.name for p in folder.rglob("*.parquet"))
    assert partitions == [f"run_date={RUN_DATE}", "run_date=2026-11-30"]
    scores = pl.read_parquet(folder / f"run_date={RUN_DATE}" / "scores.parquet")
    assert scores.height == scores.get_column("customer_id").n_unique() == 1500


@pytest.mark.slow
@pytest.mark.spark
def test_spark_reads_the_folder_output_as_a_partitioned_dataset(
    spark: Any, home: TrainedHome, tmp_path: Path
) -> None:
    from pyspark.sql.types import DateType

    customers = tmp_path / "customers.csv"
    pl.concat(list(generate(800, seed=12))).write_csv(customers)
    folder = tmp_path / "scores"
    for run_date, engine in ((RUN_DATE, "spark"), ("2026-11-30", "local")):
        _score(customers, folder, "--engine", engine, "--run-date", run_date)
    frame = spark.read.parquet(str(folder))
    assert isinstance(frame.schema["run_date"].dataType, DateType)
    counts = {
        row["run_date"].isoformat(): row["count"] for row in frame.groupBy("run_date").count().collect()
    }
    assert counts == {RUN_DATE: 800, "2026-11-30": 800}
    assert frame.select("customer_id").distinct().count() == 800


@pytest.mark.parametrize(
    ("name", "args", "code", "message", "as_local"),
    [
        ("customers.csv", ["--model", "42"], 5, "no version '42'", True),
        ("headless.csv", [], 4, "missing required columns", True),
        ("weekly.csv", [], 4, "does not match the dataset spec", True),
        ("empty.csv", [], 4, "the input has no rows", True),
        ("ragged.csv", [], 3, "cannot read as CSV", False),
        ("nope.csv", [], 3, "no such file", True),
    ],
)
@pytest.mark.slow
@pytest.mark.spark
def test_spark_errors_are_one_line_with_the_local_exit_codes(
    spark: Any,
    home: TrainedHome,
    tmp_path: Path,
    name: str,
    args: list[str],
    code: int,
    message: str,
    as_local: bool,
) -> None:
    customers = home.home.parent / "customers.csv"
    shutil.copy(customers, tmp_path / "customers.csv")
    (tmp_path / "headless.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty.csv").write_text(customers.read_text().splitlines()[0] + "\n")
    weekly = pl.read_csv(customers, infer_schema=False, n_rows=300).with_columns(Contract=pl.lit("Weekly"))
    weekly.write_csv(tmp_path / "weekly.csv")
    lines = customers.read_text().splitlines()[:50]
    (tmp_path / "ragged.csv").write_text("\n".join([*lines, lines[-1] + ",extra"]) + "\n")
    output = tmp_path / "scores.parquet"
    output.write_bytes(b"previous run")
    error = _score(tmp_path / name, output, "--engine", "spark", *args, code=code)["error"]
    assert message in error
    assert len(error.strip().splitlines()) == 1, error
    assert output.read_bytes() == b"previous run", "a failed run keeps the previous output"
    assert not list(tmp_path.glob(".scores.parquet.*"))
    if as_local:
        assert _score(tmp_path / name, output, *args, code=code)["error"] == error
