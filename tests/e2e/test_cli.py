"""The `churn` command line as a user runs it: reports, --json, exit codes, one-line errors."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import polars as pl
import pytest

from churn_mlops.cli.train import mlflow_ui_hint
from tests.commands import churn


def test_ingest_the_telco_csv(churn_home: Path, telco_csv: Path) -> None:
    report = json.loads(churn("data", "ingest", "--source", str(telco_csv), "--json"))
    assert report["rows_in"] == report["rows_valid"] == 7043
    assert report["rows_quarantined"] == 0
    assert report["created"] is True
    lake = pl.read_parquet(report["lake_path"])
    assert lake.height == 7043
    assert lake.get_column("total_charges").null_count() == 11
    assert lake.filter(pl.col("total_charges").is_null()).get_column("tenure").to_list() == [0] * 11
    again = json.loads(churn("data", "ingest", "--source", str(telco_csv), "--json"))
    assert (again["lake_version"], again["created"]) == (report["lake_version"], False)


def test_ingest_prints_a_readable_report(churn_home: Path, telco_csv: Path) -> None:
    text = churn("data", "ingest", "--source", str(telco_csv))
    assert "7043" in text
    assert "26.5%" in text


def test_generate_ingest_list_show(churn_home: Path, tmp_path: Path) -> None:
    csv = tmp_path / "customers.csv"
    generated = json.loads(
        churn("data", "generate", "--rows", "3000", "--output", str(csv), "--bad-fraction", "0.05", "--json")
    )
    assert generated["rows"] == 3000
    report = json.loads(churn("data", "ingest", "-s", str(csv), "--json"))
    assert report["rows_in"] == 3000
    assert report["rows_valid"] + report["rows_quarantined"] == 3000
    assert report["rows_quarantined"] > 0
    quarantine = pl.read_parquet(report["quarantine_path"])
    assert quarantine.height == report["rows_quarantined"]
    assert quarantine.get_column("_reasons").is_not_null().all()
    listed = json.loads(churn("data", "list", "--json"))
    assert [v["version"] for v in listed] == [report["lake_version"]]
    shown = json.loads(churn("data", "show", report["lake_version"][:5], "--json"))
    assert shown["rows"] == report["rows_valid"]
    assert shown["validation"]["rows_quarantined"] == report["rows_quarantined"]


def test_validate_does_not_touch_the_lake(churn_home: Path, tmp_path: Path) -> None:
    csv = tmp_path / "customers.csv"
    churn("data", "generate", "--rows", "500", "--output", str(csv))
    report = json.loads(churn("data", "validate", "-s", str(csv), "--json"))
    assert report["rows_valid"] == 500
    assert report["lake_version"] is None
    assert json.loads(churn("data", "list", "--json")) == []


def test_generate_to_sqlite_and_ingest_from_it(churn_home: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    churn("data", "generate", "--rows", "800", "--output", url, "--table", "clients")
    report = json.loads(churn("data", "ingest", "-s", url, "--table", "clients", "--json"))
    assert report["rows_valid"] == 800


@pytest.mark.slow
def test_pipeline_run_makes_the_demo_database_and_a_champion(churn_home: Path) -> None:
    report = json.loads(churn("pipeline", "run", "--json"))
    assert report["ingest"]["rows_valid"] == 7043
    assert (churn_home / "demo" / "customers.db").exists()
    assert Path(report["ingest"]["lake_path"]).is_relative_to(churn_home)
    training = report["training"]
    assert training["promoted"] is True
    assert training["champion"] == training["version"] == "1"
    assert 0.80 <= training["metrics"]["roc_auc"] <= 0.92


def test_a_custom_spec_is_used(churn_home: Path, tmp_path: Path) -> None:
    csv = tmp_path / "bank.csv"
    csv.write_text("ClientNo,Age,Exited\nA,30,1\nB,41,0\nC,17,0\nD,55,0\n")
    spec = tmp_path / "bank.yaml"
    spec.write_text(
        "name: bank\nid: {name: client_id, raw: ClientNo}\n"
        'target: {name: exited, raw: Exited, positive: "1", negative: "0"}\n'
        "features:\n  - {name: age, raw: Age, type: numeric, min: 18, max: 100}\n"
    )
    report = json.loads(churn("data", "ingest", "-s", str(csv), "--spec", str(spec), "--json"))
    assert (report["rows_valid"], report["rows_quarantined"]) == (3, 1)
    assert report["failures"][0]["column"] == "age"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["data", "ingest", "-s", "nope.csv"], 3, "nope.csv: no such file"),
        (["data", "ingest", "-s", "sqlite:///nope.db", "--table", "t"], 3, "no such SQLite database file"),
        (["data", "ingest", "-s", "x.csv", "--spec", "nope.yaml"], 2, "nope.yaml: cannot read spec"),
        (["data", "show", "abc"], 5, "no lake version matches 'abc'"),
        (["data", "generate", "--rows", "10", "-o", "out.xlsx"], 3, "unknown file type"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(
    churn_home: Path, args: list[str], code: int, message: str
) -> None:
    stderr = churn(*args, code=code)
    assert message in stderr
    assert stderr.strip().startswith("error:")


def test_a_headerless_file_names_the_missing_columns(churn_home: Path, tmp_path: Path) -> None:
    csv = tmp_path / "wrong.csv"
    csv.write_text("a,b\n1,2\n")
    stderr = churn("data", "ingest", "-s", str(csv), code=4)
    assert "wrong.csv: missing required columns: customerID" in stderr


def test_every_command_has_help() -> None:
    for command in (
        ["data", "generate"],
        ["data", "ingest"],
        ["data", "validate"],
        ["data", "list"],
        ["data", "show"],
        ["pipeline", "run"],
    ):
        assert "Usage" in churn(*command, "--help")


def test_the_mlflow_hint_is_a_command_that_runs(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'churn home' / 'mlflow.db'}"
    command = shlex.split(mlflow_ui_hint(uri))
    assert command[-2:] == ["--backend-store-uri", uri]
    shown = subprocess.run([*command[:-2], "--help"], capture_output=True, text=True, check=True)
    assert "--backend-store-uri" in shown.stdout


@pytest.mark.parametrize(
    ("uri", "shown", "hidden"),
    [
        ("https://ops:s3cret@mlflow.example:5000", "the MLflow UI at https://mlflow.example:5000", "s3cret"),
        ("postgresql://ops:s3cret@db/mlflow", '"$CHURN_REGISTRY__TRACKING_URI"', "s3cret"),
    ],
)
def test_the_mlflow_hint_keeps_passwords_off_the_screen(uri: str, shown: str, hidden: str) -> None:
    hint = mlflow_ui_hint(uri)
    assert shown in hint
    assert hidden not in hint
