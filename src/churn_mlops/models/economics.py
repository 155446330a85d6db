"""Retention economics: what contacting a customer costs and what keeping a churner is worth.

Training chooses thresholds by it and monitoring reports realised and expected value with it;
it needs numpy only, so monitoring does not import the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Count = TypeVar("Count", float, FloatArray)


@dataclass(frozen=True)
class BusinessCosts:
    """Retention economics: an offer costs `offer_cost`; it saves a churner worth `saved_value`."""

    offer_cost: float = 10.0
    saved_value: float = 200.0
    success_rate: float = 0.3

    def net(self, churners: Count, contacted: Count) -> Count:
        """Net value of contacting `contacted` customers of whom `churners` would churn (vectorised)."""
        return churners * self.success_rate * self.saved_value - self.offer_cost * contacted

    def value(self, y_true: npt.ArrayLike, contacted: npt.ArrayLike) -> float:
        """Net value of contacting the rows where `contacted` is true."""
        y = np.asarray(y_true, dtype=np.float64)
        mask = np.asarray(contacted, dtype=bool)
        return self.net(float(y[mask].sum()), float(mask.sum()))
