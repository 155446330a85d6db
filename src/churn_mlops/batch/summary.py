"""Running totals of a batch run: counts, the score distribution and the top customers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from churn_mlops.monitoring.profile import Profile

BINS = np.linspace(0.0, 1.0, 101)


@dataclass
class RunTotals:
    """Accumulates scored batches without keeping them."""

    top_k: int = 0
    rows_in: int = 0
    rows_scored: int = 0
    rows_quarantined: int = 0
    revenue_at_risk: float = 0.0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(BINS) - 1, dtype=np.int64))
    risk: dict[str, int] = field(default_factory=lambda: {"high": 0, "medium": 0, "low": 0})
    top: pl.DataFrame | None = None
    profile: Profile | None = None
    leaders: pl.DataFrame | None = None  # rows of most revenue at risk with their features
    scorers: set[str] = field(default_factory=set)  # what scored the batches (Spark workers may differ)

    def add(
        self,
        scores: pl.DataFrame,
        quarantined: int,
        rows_in: int,
        profile: Profile | None = None,
        leaders: pl.DataFrame | None = None,
        scorer: str | None = None,
    ) -> None:
        """Count one batch in."""
        if scorer is not None:
            self.scorers.update(scorer.split("+"))
        if profile is not None:
            self.profile = profile if self.profile is None else self.profile + profile
        if leaders is not None:
            kept = 0 if self.leaders is None else self.leaders.height
            merged = leaders if self.leaders is None else pl.concat([self.leaders, leaders], how="diagonal")
            self.leaders = merged.top_k(
                max(kept, leaders.height), by=["revenue_at_risk", "churn_probability"]
            )
        self.rows_in += rows_in
        self.rows_scored += scores.height
        self.rows_quarantined += quarantined
        probabilities = scores.get_column("churn_probability").to_numpy()
        self.counts += np.histogram(probabilities, bins=BINS)[0]
        self.revenue_at_risk += float(np.nansum(scores.get_column("revenue_at_risk").to_numpy()))
        for level, count in scores.get_column("risk").value_counts().iter_rows():
            self.risk[level] += count
        if self.top_k:
            merged = scores if self.top is None else pl.concat([self.top, scores])
            self.top = merged.sort(
                ["revenue_at_risk", "churn_probability"], descending=True, nulls_last=True
            ).head(self.top_k)

    def scorer(self) -> str | None:
        """What scored the rows (compiled, lightgbm, ...), both joined by + where workers differed."""
        return "+".join(sorted(self.scorers)) or None

    def distribution(self) -> dict[str, Any]:
        """Mean and quantiles (to 0.01) of the probabilities, and counts by risk."""
        total = int(self.counts.sum())
        if total == 0:
            return {"mean": None, "p50": None, "p90": None, "p99": None, "risk": self.risk}
        centres = (BINS[:-1] + BINS[1:]) / 2
        cumulative = np.cumsum(self.counts) / total
        quantile = {f"p{q}": float(BINS[1:][np.searchsorted(cumulative, q / 100)]) for q in (50, 90, 99)}
        return {"mean": float((centres * self.counts).sum() / total), **quantile, "risk": dict(self.risk)}
