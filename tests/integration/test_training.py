"""The training layer as a user drives it: pipeline, registry, gate, rollback, tampering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from churn_mlops.errors import ChecksumError
from churn_mlops.models.registry import Registry
from churn_mlops.settings import get_settings
from tests.commands import churn

pytestmark = pytest.mark.slow


def _registry() -> Registry:
    settings = get_settings()
    return Registry.from_settings(settings)


def _versions() -> dict[str, dict]:  # type: ignore[type-arg]
    return {v["version"]: v for v in json.loads(churn("registry", "list", "--json"))}


def test_telco_champion_gate_and_rollback(churn_home: Path, telco_csv: Path, tmp_path: Path) -> None:
    first = json.loads(churn("pipeline", "run", "--source", str(telco_csv), "--json"))["training"]
    assert first["promoted"]
    assert first["champion"] == "1"
    assert first["metrics"]["roc_auc"] >= 0.84
    assert first["metrics"]["roc_auc"] > first["baseline_metrics"]["roc_auc"] - 0.02
    versions = _versions()
    assert versions["1"]["aliases"] == ["challenger", "champion"]
    assert versions["1"]["metrics"]["roc_auc"] == pytest.approx(first["metrics"]["roc_auc"], abs=1e-6)
    assert versions["1"]["decision"]["by"] == "gate"

    second = json.loads(churn("train", "--json"))
    assert second["metrics"] == first["metrics"]
    assert not second["promoted"]
    assert "not better than the champion" in second["reason"]
    assert second["champion"] == "1"

    shuffled = tmp_path / "shuffled.csv"
    raw = pl.read_csv(telco_csv, infer_schema=False)
    order = np.random.default_rng(0).permutation(raw.height)
    raw.with_columns(pl.Series("Churn", raw.get_column("Churn").to_numpy()[order])).write_csv(shuffled)
    weak = json.loads(churn("pipeline", "run", "--source", str(shuffled), "--json"))["training"]
    assert weak["version"] == "3"
    assert not weak["promoted"]
    assert "below the floor" in weak["reason"]
    assert _versions()["3"]["aliases"] == ["challenger"]
    churn("registry", "promote", "3", code=7)

    promoted = json.loads(churn("registry", "promote", "2", "--json"))
    assert promoted["champion"] == "2"
    assert _versions()["2"]["decision"]["by"].startswith("user:")
    rolled = json.loads(churn("registry", "rollback", "--json"))
    assert rolled["champion"] == "1"
    assert "rolled back from v2 to v1" in rolled["reason"]
    churn("registry", "rollback", code=7)

    audit = [json.loads(line) for line in (churn_home / "registry" / "audit.jsonl").read_text().splitlines()]
    assert [(r["version"], r["action"]) for r in audit] == [
        ("1", "promoted"),
        ("2", "rejected"),
        ("3", "rejected"),
        ("2", "promoted"),
        ("1", "rolled back to"),
    ]
    assert all({"at", "by", "reason"} <= r.keys() for r in audit)

    shown = json.loads(churn("registry", "show", "champion", "--json"))
    assert shown["version"] == "1"
    assert shown["data_version"] == first["data_version"]


def test_mlflow_holds_runs_metrics_and_artifacts(churn_home: Path, telco_csv: Path) -> None:
    summary = json.loads(churn("pipeline", "run", "--source", str(telco_csv), "--json"))["training"]
    run = _registry().client.get_run(summary["run_id"])
    assert run.data.metrics["test_roc_auc"] == pytest.approx(summary["metrics"]["roc_auc"])
    assert run.data.tags["data_version"] == summary["data_version"]
    assert run.data.tags["git_commit"]
    assert "num_leaves" in run.data.params
    artifacts = {a.path for a in _registry().client.list_artifacts(summary["run_id"], "model")}
    assert {
        "model/model.txt",
        "model/features.json",
        "model/profile.json",
        "model/model_card.md",
        "model/checksums.json",
        "model/metrics.json",
        "model/plots",
    } <= artifacts


def test_a_corrupted_champion_is_refused_and_never_replaced_silently(
    churn_home: Path, telco_csv: Path
) -> None:
    churn("pipeline", "run", "--source", str(telco_csv), "--json")
    stored = next((churn_home / "mlartifacts").rglob("model/model.txt"))
    stored.write_text(stored.read_text().replace("Tree=0", "Tree=0 ", 1))
    with pytest.raises(ChecksumError, match=r"model\.txt: checksum mismatch"):
        _registry().load("champion")
    outcome = json.loads(churn("train", "--seed", "7", "--json"))
    assert not outcome["promoted"]
    assert "cannot be scored" in outcome["reason"]
    assert outcome["champion"] == "1"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["registry", "promote", "42"], 5, "has no version '42'"),
        (["registry", "show", "champion"], 5, "no version or alias 'champion'"),
        (["registry", "rollback"], 7, "no previous champion"),
        (["train"], 5, "no lake version matches 'latest'"),
    ],
)
def test_registry_errors_are_one_line(churn_home: Path, args: list[str], code: int, message: str) -> None:
    assert message in churn(*args, code=code)


def test_untrainable_data_is_refused_and_the_champion_kept(churn_home: Path, tmp_path: Path) -> None:
    few = tmp_path / "few.csv"
    churn("data", "generate", "--rows", "120", "--output", str(few))
    churn("data", "ingest", "-s", str(few))
    assert "training needs at least 200" in churn("train", code=4)
    unlabelled = tmp_path / "unlabelled.csv"
    pl.read_csv(few, infer_schema=False).drop("Churn").write_csv(unlabelled)
    churn("data", "ingest", "-s", str(unlabelled), "--unlabelled")
    assert "target column 'churn' is missing" in churn("train", code=4)
    assert _versions() == {}


def test_tuning_logs_each_trial_as_a_nested_run(churn_home: Path, tmp_path: Path) -> None:
    customers = tmp_path / "customers.parquet"
    churn("data", "generate", "--rows", "3000", "--output", str(customers), "--seed", "4")
    churn("data", "ingest", "-s", str(customers))
    summary = json.loads(churn("train", "--tune", "--trials", "3", "--json"))
    client = _registry().client
    parent = client.get_run(summary["run_id"])
    assert parent.data.tags["tuned_trials"] == "3"
    assert 0.5 < parent.data.metrics["tuning_best_valid_roc_auc"] <= 1.0
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary['run_id']}'"
    )
    assert len(children) == 3
    assert all("learning_rate" in child.data.params for child in children)
    assert summary["promoted"]
