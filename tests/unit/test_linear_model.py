"""The logistic-regression candidate as plain numbers: the same scores as trained, served like LightGBM."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.synthetic import generate
from churn_mlops.data.validation import validate
from churn_mlops.errors import ChecksumError
from churn_mlops.features import fit_features, transform
from churn_mlops.models.artifacts import load_predictor, write_artifacts
from churn_mlops.models.calibration import Calibration
from churn_mlops.models.linear import LinearModel
from churn_mlops.models.training import Baseline, stratified_split, train_baseline


@pytest.fixture(scope="module")
def fitted(spec: DatasetSpec) -> tuple[pl.DataFrame, np.ndarray, Baseline, LinearModel, object]:
    frame = validate(pl.concat(list(generate(3000, seed=4))), spec).valid
    labels = frame.get_column("churn").to_numpy().astype(np.int64)
    split = stratified_split(labels, valid=0.2, test=0.2, seed=0)
    features = fit_features(frame[split.train], spec)
    matrix = transform(frame, features)
    baseline = train_baseline(matrix[split.train], labels[split.train], features.categorical_indices)
    return frame[split.test], matrix[split.test], baseline, baseline.to_linear(matrix.shape[1]), features


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def test_the_numbers_score_exactly_as_the_trained_regression(fitted) -> None:  # type: ignore[no-untyped-def]
    _, matrix, baseline, linear, _ = fitted
    gaps = matrix.copy()
    gaps[:50, 0] = np.nan  # missing numbers sit at the training mean
    gaps[50:100, linear.levels[0][0]] = 999.0  # a category code training never saw
    for rows in (matrix, gaps):
        assert np.allclose(linear.raw_score(rows), _logit(baseline.predict_proba(rows)), atol=1e-9)
    assert LinearModel.from_json(linear.to_json()) == linear


def test_contributions_add_up_to_the_score_feature_by_feature(fitted) -> None:  # type: ignore[no-untyped-def]
    _, matrix, _, linear, _ = fitted
    contributions = linear.contributions(matrix)
    assert contributions.shape == (len(matrix), matrix.shape[1] + 1)
    assert np.allclose(contributions.sum(axis=1), linear.raw_score(matrix), atol=1e-12)
    column, levels = linear.levels[0]
    offset = len(linear.numeric) + 0
    first = matrix[:, column] == levels[0]
    assert np.allclose(contributions[first, column], linear.coef[offset])  # the active level's weight


def test_a_saved_linear_version_serves_like_any_other(tmp_path: Path, fitted) -> None:  # type: ignore[no-untyped-def]
    test_frame, matrix, _, linear, features = fitted
    calibration = Calibration(slope=0.9, intercept=-0.1)  # Platt scaling, as training fits it
    write_artifacts(
        tmp_path / "v1",
        model_text=linear.to_json(),
        features=features,
        meta={"calibration": vars(calibration), "threshold": 0.4},
        documents={"model_card.md": "# card\n"},
        model_kind="logistic_regression",
    )
    predictor = load_predictor(tmp_path / "v1").with_threads(1)
    assert predictor.kind == "logistic_regression"
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == [
        "checksums.json",
        "features.json",
        "linear.json",
        "model.json",
        "model_card.md",
    ]
    probabilities, decisions = predictor.predict(test_frame)
    assert np.array_equal(probabilities, calibration.apply(linear.raw_score(matrix)))
    for row, record in enumerate(test_frame.head(100).iter_rows(named=True)):
        assert predictor.predict_one(record)[0] == pytest.approx(probabilities[row], abs=1e-12)
        assert predictor.predict_one(record)[1] == decisions[row]
    reasons = predictor.reasons(test_frame.head(3).to_dict(as_series=False), 3)
    assert [len(r) for r in reasons] == [3, 3, 3]
    assert all(abs(r[0]["contribution"]) >= abs(r[1]["contribution"]) for r in reasons)
    with (tmp_path / "v1" / "linear.json").open("a") as file:
        file.write(" ")
    with pytest.raises(ChecksumError, match=re.escape("linear.json: checksum mismatch")):
        load_predictor(tmp_path / "v1")


def test_a_listing_that_leaves_out_the_kinds_own_file_is_refused(tmp_path: Path, fitted) -> None:  # type: ignore[no-untyped-def]
    _, _, _, linear, features = fitted
    write_artifacts(
        tmp_path / "v1",
        model_text=linear.to_json(),
        features=features,
        meta={"calibration": {"slope": 1.0, "intercept": 0.0}, "threshold": 0.4},
        documents={"model.txt": "not a model\n"},
        model_kind="logistic_regression",
    )
    listing = json.loads((tmp_path / "v1" / "checksums.json").read_text())
    del listing["linear.json"]
    (tmp_path / "v1" / "checksums.json").write_text(json.dumps(listing))
    with pytest.raises(ChecksumError, match=r"linear\.json is not covered"):
        load_predictor(tmp_path / "v1")
