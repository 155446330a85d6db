"""Platt scaling: LightGBM's raw score to a calibrated churn probability."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of LightGBM's raw score: p = 1 / (1 + exp(-(slope * score + intercept)))."""

    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, raw_score: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw scores."""
        return 1.0 / (1.0 + np.exp(-(self.slope * raw_score + self.intercept)))

    def apply_one(self, raw_score: float) -> float:
        """The calibrated probability of one raw score, bit for bit what `apply` gives."""
        return float(1.0 / (1.0 + np.exp(-(self.slope * raw_score + self.intercept))))
