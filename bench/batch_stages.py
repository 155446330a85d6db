"""The reference child of bench/batch.py: each batch stage alone, compile time and one-row latency.

    python bench/batch_stages.py customers.parquet   # in a CHURN_HOME with a champion

Prints one JSON object: seconds of each stage over all rows at once (read, validate, transform,
Booster.predict of the lightgbm package on 1 and on batch.num_threads threads, compiled predict on
1 and on those threads), the trees' compile time with no cache, and the median latency of scoring
one feature row through LightGBM's single-row C API and through the compiled trees.
"""

from __future__ import annotations

import ctypes
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import cast

import lightgbm as lgb
import numpy as np
import polars as pl

from churn_mlops.data.spec import load_spec
from churn_mlops.data.validation import validate
from churn_mlops.features import transform
from churn_mlops.models import compiled
from churn_mlops.models.booster import Booster
from churn_mlops.models.registry import Registry
from churn_mlops.settings import Settings

ONE_ROW_CALLS = 20_000


def _timed(action: Callable[[], object], repeats: int = 1) -> float:
    """The best of `repeats` wall-clock seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def _median_us(action: Callable[[], object], calls: int) -> float:
    """The median latency of one call, in microseconds, over `calls` calls timed in groups of 100."""
    groups = []
    for _ in range(calls // 100):
        started = time.perf_counter()
        for _ in range(100):
            action()
        groups.append((time.perf_counter() - started) / 100)
    return statistics.median(groups) * 1e6


def main() -> None:
    """Time each stage and print one JSON object."""
    settings = Settings()
    threads = settings.batch.num_threads
    _, predictor = Registry.from_settings(settings).load("champion")
    assert isinstance(predictor.booster, Booster)
    text = predictor.booster.model_text
    started = time.perf_counter()
    raw = pl.read_parquet(sys.argv[1]).drop("Churn")
    figures: dict[str, float] = {"read_s": time.perf_counter() - started}
    started = time.perf_counter()
    valid = validate(raw, load_spec(), require_target=False).valid
    figures["validate_s"] = time.perf_counter() - started
    del raw
    started = time.perf_counter()
    matrix = transform(valid, predictor.features)
    figures["transform_s"] = time.perf_counter() - started
    del valid
    booster = lgb.Booster(model_str=text)
    figures["predict_1_s"] = _timed(lambda: booster.predict(matrix, raw_score=True, num_threads=1), 2)
    figures["predict_s"] = _timed(lambda: booster.predict(matrix, raw_score=True, num_threads=threads), 2)
    figures["compile_s"] = _timed(lambda: compiled.compile_forest(text, None))
    forest = compiled.compile_forest(text, None)
    figures["compiled_1_s"] = _timed(lambda: forest.raw_score(matrix, 1), 2)
    figures["compiled_s"] = _timed(lambda: forest.raw_score(matrix, threads), 2)
    figures |= _one_row(predictor.single_row[1].raw_score, forest, matrix[0].tolist())
    trees = text.count("\nTree=")
    print(json.dumps({**figures, "rows": len(matrix), "threads": threads, "trees": trees}))


def _one_row(
    lightgbm: Callable[[list[float]], float], forest: compiled.Forest, row: list[float]
) -> dict[str, float]:
    """One feature row's latency: LightGBM's single-row C API (the API's path) and the compiled trees,
    called the same way (the row copied into a ctypes buffer, one call, the result read back)."""
    values = (ctypes.c_double * len(row))()
    result = ctypes.c_double()
    addresses = ctypes.addressof(values), ctypes.addressof(result)

    def compiled_one(row: list[float]) -> float:
        values[:] = cast("list[ctypes.c_double | float]", row)  # list is invariant
        forest.entry(*addresses, 0, 1)
        return result.value

    assert abs(compiled_one(row) - lightgbm(row)) <= 1e-9
    return {
        "one_row_lightgbm_us": _median_us(lambda: lightgbm(row), ONE_ROW_CALLS),
        "one_row_compiled_us": _median_us(lambda: compiled_one(row), ONE_ROW_CALLS),
        "one_row_compiled_numpy_us": _median_us(lambda: forest.raw_score(np.array([row]), 1), ONE_ROW_CALLS),
        "one_row_calls": ONE_ROW_CALLS,
    }


if __name__ == "__main__":
    main()
