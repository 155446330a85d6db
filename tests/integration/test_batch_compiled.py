"""Batch scoring on compiled trees: LightGBM's probabilities, whichever path scores a customer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from churn_mlops.data.spec import load_spec
from churn_mlops.data.synthetic import generate
from churn_mlops.data.validation import validate
from churn_mlops.features import transform
from churn_mlops.models import compiled
from churn_mlops.models.artifacts import Predictor
from churn_mlops.models.registry import Registry
from churn_mlops.settings import get_settings
from tests.commands import churn
from tests.integration.serving_fixtures import TrainedHome

pytestmark = pytest.mark.slow


def _score(source: Path, output: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("CHURN_BATCH__COMPILED", mode)
    get_settings.cache_clear()
    summary: dict[str, Any] = json.loads(
        churn("batch", "score", "--input", str(source), "--output", str(output), "--json")
    )
    return summary


def _champion() -> Predictor:
    _, predictor = Registry.from_settings(get_settings()).load("champion")
    return predictor


def _by_customer(path: str) -> dict[str, float]:
    scores = pl.read_parquet(path)
    return dict(zip(scores.get_column("customer_id"), scores.get_column("churn_probability"), strict=True))


@pytest.mark.parametrize("which", ["telco", "synthetic", "parquet"])
def test_compiled_and_lightgbm_runs_give_the_same_scores(
    home: TrainedHome, telco_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    source = telco_csv
    if which != "telco":  # with bad rows, quarantined alike by both runs, in several batches
        rows = pl.concat(list(generate(20_000, seed=4, bad_fraction=0.02)))
        source = tmp_path / ("customers.csv" if which == "synthetic" else "customers.parquet")
        rows.write_csv(source) if which == "synthetic" else rows.write_parquet(source, row_group_size=5_000)
        monkeypatch.setenv("CHURN_BATCH__BATCH_ROWS", "3000")
    on = _score(source, tmp_path / "compiled.parquet", "on", monkeypatch)
    off = _score(source, tmp_path / "lightgbm.parquet", "off", monkeypatch)
    assert (on["scorer"], off["scorer"]) == ("compiled", "lightgbm")
    assert on["compile_seconds"] is not None
    assert off["compile_seconds"] is None
    assert (on["rows_scored"], on["rows_quarantined"]) == (off["rows_scored"], off["rows_quarantined"])
    fast, reference = _by_customer(on["output"]), _by_customer(off["output"])
    assert fast.keys() == reference.keys()
    assert len(fast) == on["rows_scored"] > 0
    assert max(abs(fast[c] - reference[c]) for c in fast) <= 1e-9
    assert on["scores"]["risk"] == off["scores"]["risk"]
    if which != "telco":
        assert on["rows_quarantined"] > 0
        quarantined = pl.read_parquet(on["quarantine_path"])
        assert quarantined.equals(pl.read_parquet(off["quarantine_path"]))
        assert quarantined.get_column("_row").is_sorted()
        assert quarantined.get_column("_row").max() > 3000
        columns = ["customer_id", "prediction", "risk", "model_version", "run_date"]
        assert pl.read_parquet(on["output"], columns=columns).equals(
            pl.read_parquet(off["output"], columns=columns)
        )
    cached = list((home.home / "cache" / "compiled").glob("*/*.bin"))
    assert len(cached) == 1, "compiled once for the champion, under CHURN_HOME"


def test_every_scoring_path_agrees_on_missing_values_and_unseen_categories(
    home: TrainedHome, telco_csv: Path, tmp_path: Path
) -> None:
    predictor = _champion().with_threads(2)
    fast = compiled.with_compiled_trees(predictor, "on", tmp_path)
    valid = validate(pl.read_csv(telco_csv, infer_schema=False), load_spec()).valid.drop("churn")
    odd = valid.head(400).with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col("tenure")).alias("tenure"),
        pl.when(pl.int_range(pl.len()) % 4 == 0)
        .then(None)
        .otherwise(pl.col("total_charges"))
        .alias("total_charges"),
        pl.when(pl.int_range(pl.len()) % 5 == 0)
        .then(pl.lit("Weekly"))
        .otherwise(pl.col("contract"))
        .alias("contract"),
        pl.when(pl.int_range(pl.len()) % 7 == 0)
        .then(None)
        .otherwise(pl.col("payment_method"))
        .alias("payment_method"),
    )
    for frame in (valid, odd):
        matrix = transform(frame, predictor.features)
        package = lgb.Booster(model_str=predictor.booster.model_text)  # type: ignore[attr-defined]
        paths = {
            "lightgbm package": predictor.calibration.apply(
                np.asarray(package.predict(matrix, raw_score=True))
            ),
            "native booster": predictor.predict_proba(frame),
            "compiled": fast.predict_proba(frame),
            "one row": np.array([predictor.predict_one(r)[0] for r in frame.head(500).iter_rows(named=True)]),
        }
        reference = paths["lightgbm package"]
        for name, probabilities in paths.items():
            gap = np.max(np.abs(probabilities - reference[: len(probabilities)]))
            assert gap <= 1e-9, f"{name} differs from LightGBM by {gap}"
    assert np.isnan(transform(odd, predictor.features)).any(), "the odd rows reach the trees as missing"


def test_a_run_failing_mid_way_keeps_the_same_quarantined_rows_on_either_scorer(
    home: TrainedHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = pl.concat(list(generate(20_000, seed=5, bad_fraction=0.02)))
    ids = rows.get_column("customerID")
    twice = rows.with_columns(ids.scatter(10_000, ids[10_001]))  # a duplicate id in the fourth batch
    source = tmp_path / "customers.parquet"
    twice.write_parquet(source)
    monkeypatch.setenv("CHURN_BATCH__BATCH_ROWS", "3000")
    kept = {}
    for mode, day in (("on", "2031-01-01"), ("off", "2031-01-02")):  # a quarantine file per run date
        monkeypatch.setenv("CHURN_BATCH__COMPILED", mode)
        get_settings.cache_clear()
        output = tmp_path / f"{mode}.parquet"
        arguments = ("--input", str(source), "--output", str(output), "--run-date", day)
        assert "duplicate" in churn("batch", "score", *arguments, code=4)
        (path,) = (home.home / "quarantine" / "telco").glob(f"batch-{day}-*.parquet")
        kept[mode] = pl.read_parquet(path)
        assert not output.exists()
    assert kept["on"].equals(kept["off"])
    assert kept["on"].get_column("_row").max() > 6000, "the batches before the bad one are kept"
