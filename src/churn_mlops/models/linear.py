"""The logistic-regression candidate as plain numbers: served, explained and stored without a pickle.

The model is the baseline of training (`models.training.Baseline`): numeric columns of the
shared feature matrix standardised (missing values at the mean), categorical columns one-hot
over the levels seen in training, then a logistic regression. Stored as JSON (`linear.json`),
it scores with numpy alone, with the same interface as the LightGBM `Booster`: raw scores
(log-odds) and per-feature contributions whose sum, with the intercept, is the raw score.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LinearModel:
    """Standardisation, one-hot levels and logistic-regression coefficients, as numbers."""

    num_feature: int
    numeric: tuple[int, ...]  # matrix columns standardised, in coefficient order
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    levels: tuple[tuple[int, tuple[float, ...]], ...]  # (categorical column, its levels), in order
    coef: tuple[float, ...]  # the numeric columns', then each categorical column's levels'
    intercept: float

    def __post_init__(self) -> None:
        width = len(self.numeric) + sum(len(values) for _, values in self.levels)
        if len(self.coef) != width or len(self.mean) != len(self.numeric) != len(self.scale):
            raise ValueError(f"a linear model of {width} encoded columns has {len(self.coef)} coefficients")

    def raw_score(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Log-odds of the rows of a feature matrix (`num_threads` is there for the Booster's sake)."""
        return np.asarray(self._terms(np.asarray(matrix, dtype=np.float64)).sum(axis=1) + self.intercept)

    def contributions(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Each row's contribution per feature, then the intercept (LightGBM's pred_contrib layout)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        terms = self._terms(matrix)
        out = np.zeros((len(matrix), self.num_feature + 1))
        out[:, list(self.numeric)] = terms[:, : len(self.numeric)]
        start = len(self.numeric)
        for column, values in self.levels:
            out[:, column] = terms[:, start : start + len(values)].sum(axis=1)
            start += len(values)
        out[:, -1] = self.intercept
        return out

    def raw_score_one(self, row: list[float]) -> float:
        """The log-odds of one row of feature values: plain Python, for an API request's one row
        (numpy's per-call overhead would be most of the cost). Agrees with `raw_score` to 1e-12."""
        numeric, levels = self._plan
        if len(row) != self.num_feature:
            raise ValueError(f"a row of {self.num_feature} values, not {len(row)}")
        total = self.intercept
        for column, mean, scale, coef in numeric:
            value = row[column]
            if value == value:  # NaN is the mean: no contribution
                total += (value - mean) / scale * coef
        for column, weights in levels:
            total += weights.get(row[column], 0.0)
        return total

    @functools.cached_property
    def _plan(self) -> tuple[list[tuple[int, float, float, float]], list[tuple[int, dict[float, float]]]]:
        numeric = [
            (column, mean, scale, coef)
            for column, mean, scale, coef in zip(self.numeric, self.mean, self.scale, self.coef, strict=False)
        ]
        levels, start = [], len(self.numeric)
        for column, values in self.levels:
            levels.append((column, dict(zip(values, self.coef[start : start + len(values)], strict=True))))
            start += len(values)
        return numeric, levels

    def _terms(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.ndim != 2 or matrix.shape[1] != self.num_feature:
            raise ValueError(f"a feature matrix of {self.num_feature} columns, not {matrix.shape}")
        numeric = np.nan_to_num((matrix[:, list(self.numeric)] - self.mean) / self.scale)
        onehots = [matrix[:, [column]] == np.asarray(values) for column, values in self.levels]
        encoded = np.hstack([numeric, *onehots]).astype(np.float64) if onehots else numeric
        return np.asarray(encoded * np.asarray(self.coef))

    def to_json(self) -> str:
        """The model as a JSON document."""
        document: dict[str, Any] = {
            "kind": "logistic_regression",
            "num_feature": self.num_feature,
            "numeric": list(self.numeric),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "levels": [[column, list(values)] for column, values in self.levels],
            "coef": list(self.coef),
            "intercept": self.intercept,
        }
        return json.dumps(document, indent=2)

    @classmethod
    def from_json(cls, text: str) -> LinearModel:
        """A model from its JSON document."""
        found = json.loads(text)
        return cls(
            num_feature=int(found["num_feature"]),
            numeric=tuple(int(i) for i in found["numeric"]),
            mean=tuple(float(v) for v in found["mean"]),
            scale=tuple(float(v) for v in found["scale"]),
            levels=tuple((int(c), tuple(float(v) for v in values)) for c, values in found["levels"]),
            coef=tuple(float(v) for v in found["coef"]),
            intercept=float(found["intercept"]),
        )
