"""LightGBM's single-row fast prediction API, for scoring one customer per call.

A batch prediction sets up a predictor on every call (about 0.2 ms), which is nothing for a
batch and most of the cost of one API request. LightGBM's C API has a path made for this:
`LGBM_BoosterPredictForMatSingleRowFastInit` prepares a predictor once, and
`LGBM_BoosterPredictForMatSingleRowFast` scores one row of doubles in a few microseconds.
The raw scores are LightGBM's own; the tests compare them with `lightgbm.Booster.predict`.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from typing import cast

from churn_mlops.models import native
from churn_mlops.models.booster import Booster


class SingleRowError(native.LightGBMError):
    """LightGBM refused a single-row prediction."""


def _check(code: int) -> None:
    if code != 0:
        message = native.library().LGBM_GetLastError() or b"unknown error"
        raise SingleRowError(f"LightGBM single-row prediction failed: {message.decode(errors='replace')}")


class SingleRowBooster:
    """Raw scores of one row at a time from a booster, through LightGBM's fast single-row API.

    One prepared predictor and one row buffer per instance, used under a lock: safe to share
    between threads, and a caller on an event loop never waits long (a call is microseconds).
    """

    def __init__(self, booster: Booster, num_threads: int = 0) -> None:
        self.booster = booster  # the prepared predictor points into it: keep it alive
        self.columns = booster.num_feature
        lib = native.fast_library()
        config = ctypes.c_void_p()
        parameters = f"num_threads={num_threads}" if num_threads > 0 else ""
        _check(
            lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster.handle,
                native.PREDICT_RAW_SCORE,
                0,
                -1,  # every iteration: a saved model keeps only the best ones
                native.DTYPE_FLOAT64,
                self.columns,
                parameters.encode(),
                ctypes.byref(config),
            )
        )
        self._predict = lib.LGBM_BoosterPredictForMatSingleRowFast
        self._config = config.value
        self._finalizer = weakref.finalize(self, lib.LGBM_FastConfigFree, config.value)
        self._row = (ctypes.c_double * self.columns)()
        self._length = ctypes.c_int64()
        self._result = ctypes.c_double()
        self._addresses = (
            ctypes.addressof(self._row),
            ctypes.addressof(self._length),
            ctypes.addressof(self._result),
        )
        self._lock = threading.Lock()

    def raw_score(self, row: list[float]) -> float:
        """LightGBM's raw score (log-odds) of one row of feature values."""
        if len(row) != self.columns:
            raise SingleRowError(f"a row of {len(row)} values for a model of {self.columns} features")
        with self._lock:
            self._row[:] = cast("list[ctypes.c_double | float]", row)  # list is invariant
            _check(self._predict(self._config, *self._addresses))
            return self._result.value

    def close(self) -> None:
        """Free the prepared predictor now rather than when this object is collected."""
        self._finalizer()
