"""LightGBM's C library, loaded without importing the lightgbm package.

The lightgbm package imports scikit-learn, pandas and scipy (for its compatibility layer), which
a process that only scores does not need and which take seconds to import. Scoring needs only
the shared library that the package ships; this module finds it by the package's layout
(`lightgbm/lib/lib_lightgbm.so`), the one assumption about LightGBM's private files, checked by
`tests/unit/test_native.py` against the installed version.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from churn_mlops.errors import ChurnError

PREDICT_RAW_SCORE = 1  # C_API_PREDICT_RAW_SCORE
PREDICT_CONTRIB = 3  # C_API_PREDICT_CONTRIB
DTYPE_FLOAT64 = 1  # C_API_DTYPE_FLOAT64
ROW_MAJOR, COL_MAJOR = 1, 0  # C_API_IS_ROW_MAJOR, C_API_IS_COL_MAJOR

_SUFFIX = {"win32": "dll", "darwin": "dylib"}.get(sys.platform, "so")


class LightGBMError(ChurnError):
    """LightGBM's library is missing or refused a call."""


def library_path() -> Path:
    """Where the installed lightgbm package keeps its shared library."""
    spec = importlib.util.find_spec("lightgbm")
    if spec is None or not spec.submodule_search_locations:
        raise LightGBMError("the lightgbm package is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    path = package / "lib" / f"lib_lightgbm.{_SUFFIX}"
    if not path.is_file():
        raise LightGBMError(
            f"lightgbm {importlib.metadata.version('lightgbm')} keeps no library at {path}: "
            "its package layout changed; update churn_mlops/models/native.py"
        )
    return path


@functools.cache
def library() -> ctypes.CDLL:
    """The library for batch calls: the GIL is released while LightGBM works."""
    lib = ctypes.CDLL(str(library_path()))
    _declare(lib)
    return lib


@functools.cache
def fast_library() -> ctypes.PyDLL:
    """The library for calls of microseconds: they keep the GIL.

    Releasing the GIL around a call that short lets any other thread take the core for a whole
    switch interval.
    """
    lib = ctypes.PyDLL(str(library_path()))
    _declare(lib)
    return lib


def check(code: int, what: str) -> None:
    """Raise LightGBMError with the library's message unless a call returned 0."""
    if code != 0:
        message = library().LGBM_GetLastError() or b"unknown error"
        raise LightGBMError(f"LightGBM {what} failed: {message.decode(errors='replace')}")


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types of the functions used here (their C API signatures)."""
    void_p, c_int, c_int32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int32
    lib.LGBM_GetLastError.restype = ctypes.c_char_p
    lib.LGBM_BoosterLoadModelFromString.argtypes = [ctypes.c_char_p, ctypes.POINTER(c_int), void_p]
    lib.LGBM_BoosterFree.argtypes = [void_p]
    lib.LGBM_BoosterGetNumFeature.argtypes = [void_p, ctypes.POINTER(c_int)]
    lib.LGBM_BoosterPredictForMat.argtypes = [
        void_p,  # booster
        void_p,  # data
        c_int,  # data type
        c_int32,  # rows
        c_int32,  # columns
        c_int,  # row major?
        c_int,  # predict type
        c_int,  # start iteration
        c_int,  # number of iterations (<= 0: all)
        ctypes.c_char_p,  # parameters
        ctypes.POINTER(ctypes.c_int64),  # out: length
        void_p,  # out: doubles
    ]
    lib.LGBM_BoosterPredictForMatSingleRowFastInit.argtypes = [
        void_p,  # booster
        c_int,  # predict type
        c_int,  # start iteration
        c_int,  # number of iterations (<= 0: all)
        c_int,  # data type
        c_int32,  # columns
        ctypes.c_char_p,  # parameters
        ctypes.POINTER(void_p),  # out: fast config
    ]
    lib.LGBM_BoosterPredictForMatSingleRowFast.argtypes = [void_p, void_p, void_p, void_p]
    lib.LGBM_FastConfigFree.argtypes = [void_p]
