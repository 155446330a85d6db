"""The synthetic generator: reproducible, realistic, drift on demand, broken rows on demand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.synthetic import BLOCK_ROWS, generate
from churn_mlops.data.validation import validate


def _all(rows: int, **options: float) -> pl.DataFrame:
    return pl.concat(list(generate(rows, **options)))  # type: ignore[arg-type]


def test_same_seed_same_customers_different_seed_different() -> None:
    assert _all(1000, seed=3).equals(_all(1000, seed=3))
    assert not _all(1000, seed=3).equals(_all(1000, seed=4))


def test_streams_in_bounded_chunks_with_unique_ids() -> None:
    rows = BLOCK_ROWS * 2 + 17
    sizes = [frame.height for frame in generate(rows, seed=1)]
    assert sizes == [BLOCK_ROWS, BLOCK_ROWS, 17]
    ids = _all(rows, seed=1).get_column("customerID")
    assert ids.n_unique() == rows


def test_generated_data_passes_the_telco_spec(spec: DatasetSpec) -> None:
    result = validate(_all(5000, seed=2), spec)
    assert result.report.rows_quarantined == 0
    assert 0.22 <= (result.report.target_rate or 0) <= 0.32


@pytest.mark.slow
def test_a_model_trained_on_it_reaches_a_realistic_auc(spec: DatasetSpec) -> None:
    valid = validate(_all(30_000, seed=5), spec).valid.drop("customer_id")
    features = valid.drop("churn").with_columns(pl.col("total_charges").fill_null(0))
    strings = [c for c, t in features.schema.items() if t == pl.String]
    matrix = features.to_dummies(strings).cast(pl.Float64).to_numpy()
    matrix = (matrix - matrix.mean(0)) / (matrix.std(0) + 1e-9)
    labels = valid.get_column("churn").to_numpy()
    model = LogisticRegression(max_iter=500).fit(matrix[:20_000], labels[:20_000])
    auc = roc_auc_score(labels[20_000:], model.predict_proba(matrix[20_000:])[:, 1])
    assert 0.80 <= auc <= 0.90


def test_drift_shifts_contracts_and_charges() -> None:
    base, drifted = _all(20_000, seed=1), _all(20_000, seed=1, drift=1.0)

    def month_to_month(frame: pl.DataFrame) -> float:
        return float((frame.get_column("Contract") == "Month-to-month").mean())  # type: ignore[arg-type]

    assert month_to_month(drifted) > month_to_month(base) + 0.25
    assert drifted.get_column("MonthlyCharges").mean() > 1.2 * base.get_column("MonthlyCharges").mean()  # type: ignore[operator]


def test_bad_fraction_breaks_rows_that_validation_catches(spec: DatasetSpec) -> None:
    result = validate(_all(10_000, seed=1, bad_fraction=0.05), spec)
    quarantined = result.report.rows_quarantined
    assert 350 < quarantined < 650
    assert result.report.rows_valid + quarantined == 10_000
    checks = {f["check"] for f in result.report.failures}
    assert checks == {"not_a_number", "out_of_range", "unknown_category", "missing"}


def test_first_month_customers_have_blank_total_charges() -> None:
    frame = _all(5000, seed=1)
    first_month = frame.filter(pl.col("tenure") == 0)
    assert first_month.height > 0
    assert first_month.get_column("TotalCharges").null_count() == first_month.height
    assert np.all(frame.filter(pl.col("tenure") > 0).get_column("TotalCharges").is_not_null().to_numpy())
