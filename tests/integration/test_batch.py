"""Batch scoring with the local engine, as a user runs it from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa

from churn_mlops.batch.scoring import SCORE_COLUMNS
from churn_mlops.data.sinks import write_frames
from churn_mlops.data.sources import Source
from churn_mlops.data.spec import load_spec
from churn_mlops.data.synthetic import generate
from churn_mlops.data.validation import validate
from churn_mlops.models.registry import Registry
from churn_mlops.settings import get_settings
from tests.commands import churn
from tests.integration.serving_fixtures import TrainedHome

pytestmark = pytest.mark.slow


def _score(*args: str, code: int = 0) -> dict:  # type: ignore[type-arg]
    output = churn("batch", "score", *args, "--json", code=code)
    return json.loads(output) if code == 0 else {"error": output}


def test_scores_equal_the_models_own_predictions(home: TrainedHome, telco_csv: Path, tmp_path: Path) -> None:
    summary = _score("--input", str(telco_csv), "--output", str(tmp_path / "scores.parquet"))
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_quarantined"]) == (7043, 7043, 0)
    scores = pl.read_parquet(tmp_path / "scores.parquet")
    assert tuple(scores.columns) == SCORE_COLUMNS
    valid = validate(pl.read_csv(telco_csv, infer_schema=False), load_spec()).valid
    settings = get_settings()
    _, predictor = Registry.from_settings(settings).load("champion")
    expected = dict(zip(valid.get_column("customer_id"), predictor.predict_proba(valid), strict=True))
    got = dict(zip(scores.get_column("customer_id"), scores.get_column("churn_probability"), strict=True))
    assert got.keys() == expected.keys()
    assert max(abs(got[k] - expected[k]) for k in got) <= 1e-12
    charges = dict(zip(valid.get_column("customer_id"), valid.get_column("monthly_charges"), strict=True))
    first = scores.row(0, named=True)
    assert first["revenue_at_risk"] == pytest.approx(
        first["churn_probability"] * charges[first["customer_id"]] * 12
    )
    assert set(scores.get_column("model_version")) == {"1"}
    assert summary["scores"]["risk"]["high"] == int((scores.get_column("risk") == "high").sum())


def test_bad_rows_are_quarantined_with_their_source_row(home: TrainedHome, tmp_path: Path) -> None:
    raw = pl.concat(list(generate(5000, seed=8, bad_fraction=0.03)))
    raw.write_csv(tmp_path / "customers.csv")
    summary = _score("--input", str(tmp_path / "customers.csv"), "--output", str(tmp_path / "scores.parquet"))
    assert summary["rows_in"] == 5000
    assert summary["rows_scored"] + summary["rows_quarantined"] == 5000
    quarantine = pl.read_parquet(summary["quarantine_path"])
    assert quarantine.height == summary["rows_quarantined"] > 50
    rows = quarantine.get_column("_row").to_list()
    assert max(rows) > 1000, "row numbers must count across batches"
    for record in quarantine.head(20).iter_rows(named=True):
        assert (record["customerID"] or "") == (raw.item(record["_row"] - 1, "customerID") or "")
        assert record["_reasons"]
    scored_ids = set(pl.read_parquet(tmp_path / "scores.parquet").get_column("customer_id"))
    assert scored_ids.isdisjoint(set(quarantine.get_column("customerID").drop_nulls()))


def test_rerunning_a_date_replaces_its_output(home: TrainedHome, tmp_path: Path) -> None:
    customers = tmp_path / "customers.parquet"
    write_frames(generate(2500, seed=3), Source(str(customers)))
    folder, url = tmp_path / "scores", f"sqlite:///{tmp_path / 'crm.db'}"
    for run_date in ("2026-11-01", "2026-11-01", "2026-11-02"):
        _score("--input", str(customers), "--output", str(folder), "--run-date", run_date)
        _score(
            "--input",
            str(customers),
            "--output",
            url,
            "--output-table",
            "churn_scores",
            "--run-date",
            run_date,
        )
    partitions = sorted(p.parent.name for p in folder.rglob("*.parquet"))
    assert partitions == ["run_date=2026-11-01", "run_date=2026-11-02"]
    assert pl.read_parquet(folder / "run_date=2026-11-01" / "scores.parquet").height == 2500
    with sa.create_engine(url).connect() as connection:
        counts = dict(
            connection.execute(sa.text("SELECT run_date, COUNT(*) FROM churn_scores GROUP BY run_date")).all()
        )
    assert counts == {"2026-11-01": 2500, "2026-11-02": 2500}


def test_folder_output_reads_back_as_a_partitioned_dataset(home: TrainedHome, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.dataset as ds

    customers = tmp_path / "customers.parquet"
    write_frames(generate(1200, seed=9), Source(str(customers)))
    folder = tmp_path / "scores"
    for run_date in ("2026-11-01", "2026-11-02"):
        _score("--input", str(customers), "--output", str(folder), "--run-date", run_date)
    _score("--input", str(customers), "--output", str(tmp_path / "one.parquet"), "--run-date", "2026-11-01")
    one = pl.read_parquet(tmp_path / "one.parquet").drop("scored_at")
    expected = pl.concat([one, one.with_columns(run_date=pl.date(2026, 11, 2))]).sort(
        "run_date", "customer_id"
    )

    by_polars = pl.read_parquet(folder)
    assert by_polars.schema["run_date"] == pl.Date
    assert by_polars.drop("scored_at").select(one.columns).sort("run_date", "customer_id").equals(expected)
    globbed = pl.scan_parquet(folder / "**" / "*.parquet", hive_partitioning=True).collect()
    assert globbed.schema["run_date"] == pl.Date
    assert globbed.height == 2400

    dated = ds.partitioning(pa.schema([("run_date", pa.date32())]), flavor="hive")
    by_pyarrow = pl.from_arrow(ds.dataset(folder, format="parquet", partitioning=dated).to_table())
    assert isinstance(by_pyarrow, pl.DataFrame)
    assert by_pyarrow.drop("scored_at").select(one.columns).sort("run_date", "customer_id").equals(expected)
    keys = ds.dataset(folder, format="parquet", partitioning="hive").to_table().column("run_date")
    assert sorted(set(keys.to_pylist())) == ["2026-11-01", "2026-11-02"], "untyped hive keys read as text"


def test_top_customers_by_revenue_at_risk(home: TrainedHome, tmp_path: Path) -> None:
    customers = tmp_path / "customers.csv"
    write_frames(generate(3000, seed=5), Source(str(customers)))
    summary = _score(
        "--input",
        str(customers),
        "--output",
        str(tmp_path / "s.parquet"),
        "--top",
        "25",
        "--top-output",
        str(tmp_path / "top.csv"),
    )
    top = pl.read_csv(tmp_path / "top.csv")
    scores = pl.read_parquet(tmp_path / "s.parquet")
    assert top.height == 25
    assert summary["top_path"] == str(tmp_path / "top.csv")
    expected = scores.sort("revenue_at_risk", descending=True).head(25).get_column("customer_id").to_list()
    assert top.get_column("customer_id").to_list() == expected
    assert np.all(np.diff(top.get_column("revenue_at_risk").to_numpy()) <= 0)


def test_a_failed_run_keeps_the_previous_output(home: TrainedHome, tmp_path: Path) -> None:
    customers = tmp_path / "customers.csv"
    write_frames(generate(1500, seed=2), Source(str(customers)))
    output = tmp_path / "scores.parquet"
    _score("--input", str(customers), "--output", str(output))
    before = output.read_bytes()
    broken = tmp_path / "broken.csv"
    pl.read_csv(customers, infer_schema=False).with_columns(Contract=pl.lit("Weekly")).write_csv(broken)
    assert (
        "does not match the dataset spec"
        in _score("--input", str(broken), "--output", str(output), code=4)["error"]
    )
    assert output.read_bytes() == before
    assert not list(tmp_path.glob(".scores.parquet.*"))
    quarantined = list((home.home / "quarantine" / "telco").glob("batch-*.parquet"))
    assert any(pl.read_parquet(p).height == 1500 for p in quarantined), "a finished failed run keeps its rows"
    assert not (home.home / "quarantine" / ".telco.staging").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--input", "nope.csv", "--output", "s.parquet"], 3, "nope.csv: no such file"),
        (["--input", "{empty}", "--output", "s.parquet"], 4, "no rows"),
        (["--input", "{headless}", "--output", "s.parquet"], 4, "missing required columns"),
        (["--input", "{customers}", "--output", "s.parquet", "--model", "42"], 5, "no version '42'"),
        (["--input", "{customers}", "--output", "s.xlsx"], 3, "write scores to a .parquet file"),
        (["--input", "{customers}", "--output", "s.parquet", "--run-date", "yesterday"], 2, "not a date"),
    ],
)
def test_bad_inputs_are_clear_errors(
    home: TrainedHome, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "empty.csv").write_text(
        ",".join(pl.read_csv(home.home.parent / "customers.csv", n_rows=1).columns) + "\n"
    )
    (tmp_path / "headless.csv").write_text("a,b\n1,2\n")
    files = {
        "empty": tmp_path / "empty.csv",
        "headless": tmp_path / "headless.csv",
        "customers": home.home.parent / "customers.csv",
    }
    resolved = [a.format(**files) if a.startswith("{") else a for a in args]
    resolved = [str(tmp_path / a) if a.startswith("s.") else a for a in resolved]
    assert message in _score(*resolved, code=code)["error"]


def test_a_run_is_recorded_with_its_customers_most_at_risk_and_their_reasons(
    home: TrainedHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from churn_mlops.monitoring.runs import latest_runs

    monkeypatch.setenv("CHURN_BATCH__BATCH_ROWS", "400")  # the leaders are kept across many batches
    get_settings.cache_clear()
    customers = tmp_path / "customers.csv"
    write_frames(generate(3000, seed=6, bad_fraction=0.02), Source(str(customers)))
    summary = _score("--input", str(customers), "--output", str(tmp_path / "s.parquet"))
    engine = sa.create_engine(get_settings().serving_database_url)
    with engine.connect() as connection:
        run = latest_runs(connection, "batch", limit=1)[0]
    engine.dispose()
    scores = pl.read_parquet(tmp_path / "s.parquet")
    expected = scores.sort("revenue_at_risk", descending=True).head(50)
    recorded = run["summary"]["at_risk"]
    assert [c["customer_id"] for c in recorded] == expected.get_column("customer_id").to_list()
    assert recorded[0]["revenue_at_risk"] == pytest.approx(expected.item(0, "revenue_at_risk"), abs=0.01)
    assert all(len(c["reasons"]) == 3 for c in recorded)
    assert (run["rows_in"], run["rows_quarantined"]) == (summary["rows_in"], summary["rows_quarantined"])
    assert run["rows_quarantined"] > 0
    assert sum(run["summary"]["quarantine_columns"].values()) <= run["rows_quarantined"]
