"""LightGBM's single-row fast prediction API, for scoring one customer per call.

`Booster.predict` sets up a predictor on every call (about 0.2 ms with the NumPy checks), which
is nothing for a batch and most of the cost of one API request. LightGBM's C API has a path made
for this: `LGBM_BoosterPredictForMatSingleRowFastInit` prepares a predictor once, and
`LGBM_BoosterPredictForMatSingleRowFast` scores one row of doubles in a few microseconds. The
lightgbm package does not wrap it, so this module does, through ctypes on the same library.
The raw scores are LightGBM's own; the tests compare them with `Booster.predict`.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from typing import cast

import lightgbm as lgb
from lightgbm.libpath import _LIB

from churn_mlops.errors import ChurnError

_PREDICT_RAW_SCORE = 1  # C_API_PREDICT_RAW_SCORE
_DTYPE_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


def _library() -> ctypes.CDLL:
    """LightGBM's shared library, with our own function objects (their argtypes are ours to set).

    Loaded as a PyDLL: its calls keep the GIL. A prediction takes microseconds, and releasing
    the GIL around it would let any other thread take the core for a switch interval.
    """
    library = ctypes.PyDLL(_LIB._name)
    library.LGBM_BoosterPredictForMatSingleRowFastInit.argtypes = [
        ctypes.c_void_p,  # booster
        ctypes.c_int,  # predict type
        ctypes.c_int,  # start iteration
        ctypes.c_int,  # number of iterations (<= 0: all)
        ctypes.c_int,  # data type
        ctypes.c_int32,  # number of columns
        ctypes.c_char_p,  # parameters
        ctypes.POINTER(ctypes.c_void_p),  # out: fast config
    ]
    library.LGBM_BoosterPredictForMatSingleRowFast.argtypes = [
        ctypes.c_void_p,  # fast config
        ctypes.c_void_p,  # one row of doubles
        ctypes.c_void_p,  # out: int64 length
        ctypes.c_void_p,  # out: double result
    ]
    library.LGBM_FastConfigFree.argtypes = [ctypes.c_void_p]
    library.LGBM_GetLastError.restype = ctypes.c_char_p
    return library


_LIBRARY = _library()


class SingleRowError(ChurnError):
    """LightGBM refused a single-row prediction."""


def _check(code: int) -> None:
    if code != 0:
        message = _LIBRARY.LGBM_GetLastError() or b"unknown error"
        raise SingleRowError(f"LightGBM single-row prediction failed: {message.decode(errors='replace')}")


class SingleRowBooster:
    """Raw scores of one row at a time from a booster, through LightGBM's fast single-row API.

    One prepared predictor and one row buffer per instance, used under a lock: safe to share
    between threads, and a caller on an event loop never waits long (a call is microseconds).
    """

    def __init__(self, booster: lgb.Booster, num_threads: int = 0) -> None:
        self.booster = booster  # the prepared predictor points into it: keep it alive
        self.columns = booster.num_feature()
        config = ctypes.c_void_p()
        parameters = f"num_threads={num_threads}" if num_threads > 0 else ""
        iterations = booster.best_iteration if booster.best_iteration > 0 else -1  # as Booster.predict
        _check(
            _LIBRARY.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                _PREDICT_RAW_SCORE,
                0,
                iterations,
                _DTYPE_FLOAT64,
                self.columns,
                parameters.encode(),
                ctypes.byref(config),
            )
        )
        self._config = config.value
        self._finalizer = weakref.finalize(self, _LIBRARY.LGBM_FastConfigFree, config.value)
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
            _check(_LIBRARY.LGBM_BoosterPredictForMatSingleRowFast(self._config, *self._addresses))
            return self._result.value

    def close(self) -> None:
        """Free the prepared predictor now rather than when this object is collected."""
        self._finalizer()
