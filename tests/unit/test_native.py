"""Scoring on LightGBM's C library alone: the same scores as the lightgbm package, and a loud upgrade."""

from __future__ import annotations

import importlib.metadata
import pickle

import lightgbm as lgb
import numpy as np
import pytest

from churn_mlops.models import native
from churn_mlops.models.booster import Booster


@pytest.fixture(scope="module")
def model() -> lgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 6))
    x[:, 5] = rng.integers(0, 4, size=2000)
    y = (x[:, 0] + x[:, 5] * 0.5 + rng.normal(size=2000) > 1).astype(int)
    data = lgb.Dataset(x, y, categorical_feature=[5])
    params = {"objective": "binary", "num_leaves": 7, "verbosity": -1, "seed": 0}
    return lgb.train(params, data, num_boost_round=30)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6))
    x[:, 5] = rng.integers(0, 6, size=500)  # categories 4 and 5 were never seen in training
    x[::7, 1] = np.nan
    return x


def test_the_library_is_where_the_installed_lightgbm_keeps_it() -> None:
    version = importlib.metadata.version("lightgbm")
    assert native.library_path().is_file(), f"lightgbm {version} moved its shared library"


def test_raw_scores_are_lightgbm_s_own(model: lgb.Booster, rows: np.ndarray) -> None:
    booster = Booster(model.model_to_string())
    expected = model.predict(rows, raw_score=True)
    assert booster.num_feature == 6
    assert np.array_equal(booster.raw_score(rows), expected)
    assert np.array_equal(booster.raw_score(rows, num_threads=1), expected)
    assert np.array_equal(booster.raw_score(np.asfortranarray(rows)), expected)
    assert np.array_equal(
        booster.raw_score(rows.astype(np.float32)), model.predict(rows.astype(np.float32), raw_score=True)
    )
    assert booster.raw_score(rows[:0]).shape == (0,)


def test_contributions_are_lightgbm_s_pred_contrib(model: lgb.Booster, rows: np.ndarray) -> None:
    booster = Booster(model.model_to_string())
    contributions = booster.contributions(rows)
    assert contributions.shape == (500, 7)
    assert np.array_equal(contributions, model.predict(rows, pred_contrib=True))
    assert np.allclose(contributions.sum(axis=1), model.predict(rows, raw_score=True))


def test_a_booster_travels_as_its_model_text(model: lgb.Booster, rows: np.ndarray) -> None:
    booster = Booster(model.model_to_string())
    copy = pickle.loads(pickle.dumps(booster))
    assert copy.handle != booster.handle
    assert np.array_equal(copy.raw_score(rows), booster.raw_score(rows))


def test_lightgbm_s_refusals_name_what_failed(model: lgb.Booster, rows: np.ndarray) -> None:
    with pytest.raises(native.LightGBMError, match="model loading failed"):
        Booster("not a model")
    with pytest.raises(native.LightGBMError, match=r"prediction failed: .*number of features"):
        Booster(model.model_to_string()).raw_score(rows[:, :4])
    with pytest.raises(native.LightGBMError, match="2 dimensions"):
        Booster(model.model_to_string()).raw_score(rows[0])
