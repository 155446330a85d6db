"""A LightGBM model for scoring, on LightGBM's C library alone.

Scores are LightGBM's own (the same library, the same calls as `lightgbm.Booster.predict`);
`tests/unit/test_native.py` compares them. Loading it imports neither the lightgbm package nor
the scientific stack that package pulls in.
"""

from __future__ import annotations

import ctypes
import weakref

import numpy as np

from churn_mlops.models import native


class Booster:
    """A LightGBM model loaded from its text form, for raw scores and feature contributions."""

    def __init__(self, model_text: str) -> None:
        self.model_text = model_text
        handle, iterations = ctypes.c_void_p(), ctypes.c_int()
        lib = native.library()
        native.check(
            lib.LGBM_BoosterLoadModelFromString(
                model_text.encode(), ctypes.byref(iterations), ctypes.byref(handle)
            ),
            "model loading",
        )
        self.handle: int = handle.value or 0
        self._finalizer = weakref.finalize(self, lib.LGBM_BoosterFree, handle.value)
        columns = ctypes.c_int()
        native.check(lib.LGBM_BoosterGetNumFeature(self.handle, ctypes.byref(columns)), "feature count")
        self.num_feature = columns.value

    def __reduce__(self) -> tuple[type[Booster], tuple[str]]:
        """Pickled as its model text (for Spark executors): a handle means nothing elsewhere."""
        return Booster, (self.model_text,)

    def raw_score(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Raw scores (log-odds) of the rows of a feature matrix."""
        return self._predict(matrix, native.PREDICT_RAW_SCORE, num_threads)

    def contributions(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Each row's SHAP contributions per feature, then the expected value (LightGBM pred_contrib)."""
        return self._predict(matrix, native.PREDICT_CONTRIB, num_threads).reshape(len(matrix), -1)

    def _predict(self, matrix: np.ndarray, kind: int, num_threads: int) -> np.ndarray:
        if matrix.ndim != 2:
            raise native.LightGBMError(f"a feature matrix has 2 dimensions, not {matrix.ndim}")
        rows, columns = matrix.shape
        width = 1 if kind == native.PREDICT_RAW_SCORE else columns + 1
        if rows == 0:
            return np.empty(0, dtype=np.float64)
        if matrix.flags["F_CONTIGUOUS"] and not matrix.flags["C_CONTIGUOUS"]:
            data, layout = np.asarray(matrix, dtype=np.float64, order="F"), native.COL_MAJOR
        else:
            data, layout = np.ascontiguousarray(matrix, dtype=np.float64), native.ROW_MAJOR
        out = np.empty(rows * width, dtype=np.float64)
        length = ctypes.c_int64()
        parameters = f"num_threads={num_threads}" if num_threads > 0 else ""
        for start in range(0, rows, _MAX_ROWS):
            part = data[start : start + _MAX_ROWS]
            if layout == native.COL_MAJOR and not part.flags["F_CONTIGUOUS"]:
                part = np.asfortranarray(part)
            native.check(
                native.library().LGBM_BoosterPredictForMat(
                    self.handle,
                    part.ctypes.data,
                    native.DTYPE_FLOAT64,
                    len(part),
                    columns,
                    layout,
                    kind,
                    0,
                    -1,
                    parameters.encode(),
                    ctypes.byref(length),
                    out[start * width :].ctypes.data,
                ),
                "prediction",
            )
        return out


_MAX_ROWS = 2**31 - 1  # the C API counts rows in int32
