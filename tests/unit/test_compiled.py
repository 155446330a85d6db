"""Compiled trees: LightGBM's raw scores from native code, cached locally, or LightGBM with a reason."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from churn_mlops.features.spec import FeatureSpec
from churn_mlops.models import compiled
from churn_mlops.models.artifacts import Predictor
from churn_mlops.models.booster import Booster
from churn_mlops.models.calibration import Calibration
from churn_mlops.models.compiled import CompiledBooster, CompileError, compile_forest, with_compiled_trees
from churn_mlops.models.linear import LinearModel


@pytest.fixture(scope="module")
def model() -> lgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6)) * 10
    x[:, 5] = rng.integers(0, 4, size=3000)
    x[::9, 2] = np.nan
    y = (x[:, 0] + x[:, 5] * 3 + rng.normal(size=3000) * 5 > 4).astype(int)
    data = lgb.Dataset(x, y, categorical_feature=[5])
    params = {"objective": "binary", "num_leaves": 15, "verbosity": -1, "seed": 0}
    return lgb.train(params, data, num_boost_round=60)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """Rows with missing numbers, missing categories and categories never seen in training."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50_000, 6)) * 10
    x[:, 5] = rng.integers(-1, 7, size=len(x))  # 4, 5, 6 unseen; -1 a negative code
    x[::7, 1] = np.nan
    x[::11, 5] = np.nan
    x[::13, 2] = 0.0
    return np.asfortranarray(x)  # as the feature transform builds it


@pytest.fixture(autouse=True)
def fresh_process() -> Iterator[None]:
    """Each test starts as a new process would: nothing compiled in memory."""
    compiled._LOADED.clear()
    yield
    compiled._LOADED.clear()


@pytest.fixture(params=["library", "object"])
def form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both forms of compiled code: a shared library (system linker), or object code (no linker)."""
    if request.param == "library" and compiled._linker() is None:
        pytest.skip("no system linker (ld) here: the trees load as object code")
    if request.param == "object":
        monkeypatch.setattr(compiled, "_linker", lambda: None)
    return str(request.param)


def test_compiled_scores_are_lightgbm_s_own(
    model: lgb.Booster, rows: np.ndarray, tmp_path: Path, form: str
) -> None:
    forest = compile_forest(model.model_to_string(), tmp_path)
    assert isinstance(forest.engine, ctypes.CDLL) == (form == "library")
    expected = model.predict(rows, raw_score=True)
    for threads in (1, 2, 0):
        assert np.max(np.abs(forest.raw_score(rows, threads) - expected)) <= 1e-9
    assert np.max(np.abs(forest.raw_score(np.ascontiguousarray(rows)) - expected)) <= 1e-9
    assert np.max(np.abs(forest.raw_score(rows[:1], 1) - expected[:1])) <= 1e-9
    assert forest.raw_score(rows[:0]).shape == (0,)
    with pytest.raises(CompileError, match=r"shape \(50000, 4\) for a model of 6 features"):
        forest.raw_score(rows[:, :4])


def test_the_code_is_cached_by_model_sha256_and_reused(
    model: lgb.Booster, rows: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    text = model.model_to_string()
    first = compile_forest(text, tmp_path).raw_score(rows)
    (folder,) = tmp_path.iterdir()
    assert folder.name == hashlib.sha256(text.encode()).hexdigest()
    assert sorted(p.suffix for p in folder.iterdir()) == [".bin", ".sha256"]
    compiled._LOADED.clear()

    def no_llvm(*args: object) -> bytes:
        raise AssertionError("compiled again although cached")

    monkeypatch.setattr(compiled, "_compile_in_child", no_llvm)
    assert np.array_equal(compile_forest(text, tmp_path).raw_score(rows), first)


def test_a_damaged_cache_file_is_compiled_again(
    model: lgb.Booster, rows: np.ndarray, tmp_path: Path, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    text = model.model_to_string()
    expected = compile_forest(text, tmp_path).raw_score(rows)
    (code,) = tmp_path.glob("*/*.bin")
    code.write_bytes(code.read_bytes()[:1000])
    compiled._LOADED.clear()
    with caplog.at_level(logging.WARNING):
        assert np.array_equal(compile_forest(text, tmp_path).raw_score(rows), expected)
    assert "does not match its sha256" in caplog.text
    assert len(code.read_bytes()) > 1000, "the cache holds the whole object again"


def test_a_model_the_compiler_refuses_is_a_compile_error(model: lgb.Booster, tmp_path: Path) -> None:
    broken = model.model_to_string().replace("split_feature=", "split_features=", 1)
    with pytest.raises(CompileError, match=r"the trees did not compile \(.+\)"):
        compile_forest(broken, tmp_path)
    assert not list(tmp_path.glob("*/*.bin")), "nothing cached"


def test_an_unwritable_cache_still_compiles(model: lgb.Booster, rows: np.ndarray, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    forest = compile_forest(model.model_to_string(), blocker)
    assert np.max(np.abs(forest.raw_score(rows) - model.predict(rows, raw_score=True))) <= 1e-9


def _predictor(booster: Booster | LinearModel) -> Predictor:
    features = FeatureSpec(
        dataset="test", spec_digest="", id_column="id", target="y", numeric=(), categorical=(), derived=()
    )
    return Predictor(booster, features, Calibration(1.0, 0.0), 0.5, {})


def test_modes_choose_the_scorer(model: lgb.Booster, rows: np.ndarray, tmp_path: Path) -> None:
    predictor = _predictor(Booster(model.model_to_string()))
    assert with_compiled_trees(predictor, "off", tmp_path) is predictor
    for mode in ("auto", "on"):
        chosen = with_compiled_trees(predictor, mode, tmp_path)
        assert isinstance(chosen.booster, CompiledBooster)
        assert compiled.scorer_name(chosen) == "compiled"
        assert chosen.kind == "lightgbm"
        assert np.max(np.abs(chosen.booster.raw_score(rows) - model.predict(rows, raw_score=True))) <= 1e-9
        assert np.array_equal(
            chosen.booster.contributions(rows[:50]), model.predict(rows[:50], pred_contrib=True)
        )
    assert compiled.scorer_name(predictor) == "lightgbm"


def test_without_lleaves_auto_falls_back_with_one_line_and_on_fails(
    model: lgb.Booster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "lleaves", None)  # as if not installed: importing it fails
    predictor = _predictor(Booster(model.model_to_string()))
    with caplog.at_level(logging.WARNING, logger="churn_mlops.models.compiled"):
        assert with_compiled_trees(predictor, "auto", tmp_path) is predictor
    (line,) = caplog.messages
    assert "scoring with LightGBM instead of compiled trees: lleaves is not installed" in line
    with pytest.raises(CompileError, match=r"batch\.compiled is on, but lleaves is not installed"):
        with_compiled_trees(predictor, "on", tmp_path)


def test_trees_lleaves_cannot_compile_fall_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 3))
    params = {"objective": "binary", "linear_tree": True, "verbosity": -1, "num_leaves": 4}
    linear = lgb.train(params, lgb.Dataset(x, (x[:, 0] > 0).astype(int)), num_boost_round=5)
    predictor = _predictor(Booster(linear.model_to_string()))
    with caplog.at_level(logging.WARNING):
        assert with_compiled_trees(predictor, "auto", tmp_path) is predictor
    assert "lleaves does not compile linear trees" in caplog.text
    with pytest.raises(CompileError, match="linear trees"):
        with_compiled_trees(predictor, "on", tmp_path)


def test_a_logistic_regression_is_left_as_it_is(tmp_path: Path) -> None:
    linear = LinearModel(2, (0, 1), (0.0, 0.0), (1.0, 1.0), (), (0.5, -0.5), 0.1)
    predictor = _predictor(linear)
    assert with_compiled_trees(predictor, "on", tmp_path) is predictor
    assert compiled.scorer_name(predictor) == "logistic_regression"
    assert not any(tmp_path.iterdir())
