"""A window's histograms against the reference, as the dashboard draws them."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.synthetic import generate
from churn_mlops.data.validation import validate
from churn_mlops.features.spec import fit_features
from churn_mlops.models.profile import reference_profile
from churn_mlops.monitoring.counting import build_profile
from churn_mlops.monitoring.histograms import distributions
from churn_mlops.monitoring.reference import Reference


def _customers(rows: int, seed: int, spec: DatasetSpec, drift: float = 0.0) -> pl.DataFrame:
    return validate(pl.concat(generate(rows, seed=seed, drift=drift)), spec).valid


@pytest.fixture(scope="module")
def reference(spec: DatasetSpec) -> Reference:
    train = _customers(5000, 1, spec)
    scores = np.random.default_rng(0).beta(2, 5, train.height)
    document = reference_profile(train, scores, fit_features(train, spec))
    return Reference.from_profile("v1", json.loads(json.dumps(document)), 0.4, {"roc_auc": 0.8})


def _distributions(frame: pl.DataFrame, reference: Reference, seed: int) -> dict:
    scores = np.random.default_rng(seed).beta(2, 5, frame.height)
    decisions = (scores >= reference.threshold).astype(np.int64)
    return distributions(build_profile(frame, scores, decisions, reference), reference)


def test_every_feature_and_the_scores_are_shares_beside_the_reference(
    reference: Reference, spec: DatasetSpec
) -> None:
    found = _distributions(_customers(2000, 2, spec), reference, 1)
    assert set(found["features"]) == set(reference.features)
    for name, histogram in [*found["features"].items(), ("scores", found["scores"])]:
        assert len(histogram["labels"]) == len(histogram["window"]) == len(histogram["reference"]), name
        assert sum(histogram["window"]) == pytest.approx(1.0, abs=1e-5), name
    assert found["features"]["partner"]["labels"] == ["0", "1"]  # a boolean's two values
    assert found["features"]["contract"]["labels"][-1] == "(unseen)"
    expected_rate = float((np.random.default_rng(1).beta(2, 5, 2000) >= 0.4).mean())
    assert found["decision_rate"] == pytest.approx(expected_rate)


def test_a_drifted_window_shows_the_shift_in_its_histogram(reference: Reference, spec: DatasetSpec) -> None:
    calm = _distributions(_customers(3000, 3, spec), reference, 2)["features"]["contract"]
    drifted = _distributions(_customers(3000, 3, spec, drift=0.8), reference, 2)["features"]["contract"]
    monthly = calm["labels"].index("Month-to-month")
    assert calm["window"][monthly] == pytest.approx(calm["reference"][monthly], abs=0.04)
    assert drifted["window"][monthly] > calm["window"][monthly] + 0.1


def test_unseen_categories_land_in_their_own_bin(reference: Reference, spec: DatasetSpec) -> None:
    frame = _customers(1000, 4, spec).with_columns(
        pl.when(pl.int_range(pl.len()) < 100)
        .then(pl.lit("Satellite"))
        .otherwise(pl.col("internet_service"))
        .alias("internet_service")
    )
    histogram = _distributions(frame, reference, 3)["features"]["internet_service"]
    assert histogram["window"][-1] == pytest.approx(0.1)
    assert histogram["reference"][-1] == 0.0
