"""Model fitting and artifacts: deterministic, calibrated, and refused when tampered with."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.synthetic import generate
from churn_mlops.data.validation import validate
from churn_mlops.errors import ChecksumError, DataValidationError, ModelNotFoundError
from churn_mlops.features import fit_features, transform
from churn_mlops.models.artifacts import Predictor, load_predictor, write_artifacts
from churn_mlops.models.single_row import SingleRowBooster, SingleRowError
from churn_mlops.models.training import check_labels, stratified_split, train_baseline, train_lightgbm


@pytest.fixture(scope="module")
def data(spec: DatasetSpec) -> tuple[pl.DataFrame, np.ndarray]:
    frame = validate(pl.concat(list(generate(4000, seed=3))), spec).valid
    return frame, frame.get_column("churn").to_numpy().astype(np.int64)


def _fit(frame: pl.DataFrame, labels: np.ndarray, spec: DatasetSpec, seed: int = 0):  # type: ignore[no-untyped-def]
    split = stratified_split(labels, valid=0.2, test=0.2, seed=seed)
    features = fit_features(frame[split.train], spec)
    matrix = transform(frame, features)
    model = train_lightgbm(
        matrix[split.train],
        labels[split.train],
        matrix[split.valid],
        labels[split.valid],
        categorical=features.categorical_indices,
        seed=seed,
        max_rounds=300,
    )
    return split, features, matrix, model


def test_split_is_stratified_disjoint_and_reproducible() -> None:
    labels = np.array([0] * 800 + [1] * 200)
    split = stratified_split(labels, valid=0.2, test=0.2, seed=1)
    assert split.sizes() == {"train": 600, "valid": 200, "test": 200}
    assert set(split.train).isdisjoint(split.valid) and set(split.valid).isdisjoint(split.test)  # noqa: PT018
    assert labels[split.test].mean() == pytest.approx(0.2)
    again = stratified_split(labels, valid=0.2, test=0.2, seed=1)
    assert np.array_equal(split.test, again.test)
    assert not np.array_equal(split.test, stratified_split(labels, valid=0.2, test=0.2, seed=2).test)


def test_same_data_and_seed_give_identical_predictions(data, spec: DatasetSpec) -> None:  # type: ignore[no-untyped-def]
    frame, labels = data
    split, _, matrix, first = _fit(frame, labels, spec)
    _, _, _, second = _fit(frame, labels, spec)
    assert np.array_equal(first.predict_proba(matrix[split.test]), second.predict_proba(matrix[split.test]))


def test_model_learns_and_is_calibrated(data, spec: DatasetSpec) -> None:  # type: ignore[no-untyped-def]
    frame, labels = data
    split, features, matrix, model = _fit(frame, labels, spec)
    probabilities = model.predict_proba(matrix[split.test])
    assert roc_auc_score(labels[split.test], probabilities) > 0.8
    assert probabilities.mean() == pytest.approx(labels[split.test].mean(), abs=0.04)
    baseline = train_baseline(matrix[split.train], labels[split.train], features.categorical_indices)
    assert roc_auc_score(labels[split.test], baseline.predict_proba(matrix[split.test])) > 0.8


@pytest.mark.parametrize(
    ("labels", "message"),
    [(np.zeros(500), "at least 10 of each class"), (np.array([0, 1] * 20), "at least 200")],
)
def test_untrainable_labels_are_refused(labels: np.ndarray, message: str) -> None:
    with pytest.raises(DataValidationError, match=message):
        check_labels(labels, min_rows=200)


def _saved(tmp_path: Path, data, spec: DatasetSpec) -> tuple[Path, pl.DataFrame, np.ndarray]:  # type: ignore[no-untyped-def]
    frame, labels = data
    split, features, matrix, model = _fit(frame, labels, spec)
    meta = {"calibration": vars(model.calibration), "threshold": 0.4}
    write_artifacts(
        tmp_path / "v1",
        model_text=model.booster.model_to_string(),
        features=features,
        meta=meta,
        documents={"model_card.md": "# card\n"},
    )
    return tmp_path / "v1", frame[split.test], model.predict_proba(matrix[split.test])


def test_a_saved_version_predicts_exactly_as_trained(tmp_path: Path, data, spec: DatasetSpec) -> None:  # type: ignore[no-untyped-def]
    directory, test_frame, expected = _saved(tmp_path, data, spec)
    predictor = load_predictor(directory)
    assert np.array_equal(predictor.predict_proba(test_frame), expected)
    probabilities, decisions = predictor.predict(test_frame)
    assert np.array_equal(decisions, (probabilities >= 0.4).astype(np.int8))
    assert not any(p.suffix in {".pkl", ".pickle", ".joblib"} for p in directory.rglob("*"))


@pytest.mark.parametrize("victim", ["model.txt", "features.json", "model.json", "model_card.md"])
def test_a_changed_artifact_is_refused(tmp_path: Path, data, spec: DatasetSpec, victim: str) -> None:  # type: ignore[no-untyped-def]
    directory, _, _ = _saved(tmp_path, data, spec)
    with (directory / victim).open("a") as file:
        file.write(" ")
    with pytest.raises(ChecksumError, match=f"{re.escape(victim)}: checksum mismatch"):
        load_predictor(directory)


def test_missing_files_and_listings_are_refused(tmp_path: Path, data, spec: DatasetSpec) -> None:  # type: ignore[no-untyped-def]
    directory, _, _ = _saved(tmp_path, data, spec)
    (directory / "model_card.md").unlink()
    with pytest.raises(ChecksumError, match="missing"):
        load_predictor(directory)
    listing = json.loads((directory / "checksums.json").read_text())
    (directory / "checksums.json").write_text(
        json.dumps({k: v for k, v in listing.items() if k != "model.txt"})
    )
    with pytest.raises(ChecksumError, match=r"model\.txt or linear\.json\) is not covered"):
        load_predictor(directory)
    (directory / "checksums.json").unlink()
    with pytest.raises(ModelNotFoundError):
        load_predictor(directory)


def test_one_record_at_a_time_scores_as_the_batch_path(tmp_path: Path, data, spec: DatasetSpec) -> None:  # type: ignore[no-untyped-def]
    directory, test_frame, expected = _saved(tmp_path, data, spec)
    predictor: Predictor = load_predictor(directory).with_threads(1)
    probabilities, decisions = predictor.predict(test_frame)
    assert np.array_equal(probabilities, expected)
    for row, record in enumerate(test_frame.head(300).iter_rows(named=True)):
        assert predictor.predict_one(record) == (probabilities[row], decisions[row]), f"row {row}"
    gaps = test_frame.row(0, named=True) | {"contract": "Weekly", "tenure": None, "total_charges": None}
    assert predictor.predict_one(gaps)[0] == predictor.predict({k: [v] for k, v in gaps.items()})[0][0]


def test_the_single_row_api_refuses_a_row_of_the_wrong_width(tmp_path: Path, data, spec: DatasetSpec) -> None:  # type: ignore[no-untyped-def]
    directory, _, _ = _saved(tmp_path, data, spec)
    booster = SingleRowBooster(load_predictor(directory).booster)
    with pytest.raises(SingleRowError, match="a row of 3 values for a model of 21 features"):
        booster.raw_score([1.0, 2.0, 3.0])
    booster.close()
    booster.close()  # closing twice is harmless


def test_the_risk_band_is_the_same_for_one_customer_and_a_batch() -> None:
    from churn_mlops.models.artifacts import risk_band, risk_bands

    probabilities = np.array([0.0, 0.199, 0.2, 0.3, 0.399, 0.4, 0.9, 1.0])
    expected = ["low", "low", "medium", "medium", "medium", "high", "high", "high"]
    assert [risk_band(float(p), 0.4) for p in probabilities] == expected
    assert risk_bands(probabilities, 0.4).tolist() == expected


def test_cross_validation_folds_are_disjoint_stratified_and_cover_every_row() -> None:
    from churn_mlops.pipeline.candidates import stratified_folds

    labels = (np.random.default_rng(0).random(1003) < 0.27).astype(np.int64)
    folds = stratified_folds(labels, 5, seed=1)
    together = np.concatenate(folds)
    assert sorted(together.tolist()) == list(range(1003))  # every row held out exactly once
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 2
    for fold in folds:
        assert abs(labels[fold].mean() - labels.mean()) < 0.01
    assert [f.tolist() for f in stratified_folds(labels, 5, seed=1)] == [f.tolist() for f in folds]
