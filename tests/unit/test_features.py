"""The feature transform: fitted on training rows, the same for one row and for a batch."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.validation import validate
from churn_mlops.errors import DataValidationError
from churn_mlops.features import FeatureSpec, fit_features, transform
from churn_mlops.features.row import RowTransform
from tests.factories import raw_customers


@pytest.fixture(scope="module")
def frame(spec: DatasetSpec) -> pl.DataFrame:
    return validate(raw_customers(400, seed=11), spec).valid


@pytest.fixture(scope="module")
def features(frame: pl.DataFrame, spec: DatasetSpec) -> FeatureSpec:
    return fit_features(frame, spec)


def _record(frame: pl.DataFrame, row: int) -> dict[str, list[object]]:
    return {name: [value] for name, value in frame.row(row, named=True).items()}


def test_one_row_equals_the_same_row_inside_a_batch(frame: pl.DataFrame, features: FeatureSpec) -> None:
    batch = transform(frame, features)
    assert batch.shape == (frame.height, len(features.feature_names))
    for row in (0, 17, frame.height - 1):
        assert np.array_equal(transform(_record(frame, row), features)[0], batch[row], equal_nan=True)
        assert np.array_equal(transform(frame.slice(row, 1), features)[0], batch[row], equal_nan=True)


def test_arrow_tables_and_polars_frames_agree(frame: pl.DataFrame, features: FeatureSpec) -> None:
    assert np.array_equal(transform(frame.to_arrow(), features), transform(frame, features), equal_nan=True)


def test_frames_with_gaps_and_other_types_agree_with_arrow_and_records(
    frame: pl.DataFrame, features: FeatureSpec
) -> None:
    every = pl.int_range(pl.len())
    gappy = frame.with_columns(
        pl.when(every % 3 == 0).then(None).otherwise(pl.col("tenure")).alias("tenure"),
        pl.when(every % 4 == 0).then(float("nan")).otherwise(pl.col("total_charges")).alias("total_charges"),
        pl.when(every % 5 == 0).then(None).otherwise(pl.col("monthly_charges")).alias("monthly_charges"),
        pl.when(every % 6 == 0).then(None).otherwise(pl.col("partner")).alias("partner"),
        pl.when(every % 7 == 0).then(pl.lit("Weekly")).otherwise(pl.col("contract")).alias("contract"),
        pl.when(every % 8 == 0).then(None).otherwise(pl.col("payment_method")).alias("payment_method"),
    )
    retyped = gappy.with_columns(
        pl.col("tenure").cast(pl.Int32),
        pl.col("monthly_charges").cast(pl.Float32),
        pl.col("gender").cast(pl.Categorical),
    )
    for data in (frame, gappy, retyped):
        matrix = transform(data, features)
        assert np.array_equal(matrix, transform(data.to_arrow(), features), equal_nan=True)
        assert np.array_equal(matrix, transform(data.to_dict(as_series=False), features), equal_nan=True)
    names = features.feature_names
    matrix = transform(gappy, features)
    assert np.isnan(matrix[::7, names.index("contract")]).all()
    assert not np.isnan(matrix[:, names.index("total_charges")]).any(), "NaN takes the fill as null does"


def test_unknown_and_missing_categories_become_missing_codes(
    frame: pl.DataFrame, features: FeatureSpec
) -> None:
    record = _record(frame, 0) | {"contract": ["Weekly"], "payment_method": [None]}
    row = transform(record, features)[0]
    names = features.feature_names
    assert np.isnan(row[names.index("contract")])
    assert np.isnan(row[names.index("payment_method")])
    assert not np.isnan(row[names.index("internet_service")])


def test_missing_numbers_take_the_training_median(frame: pl.DataFrame, features: FeatureSpec) -> None:
    record = _record(frame, 0) | {"total_charges": [None], "partner": [None]}
    row = transform(record, features)[0]
    names = features.feature_names
    median = frame.get_column("total_charges").median()
    assert row[names.index("total_charges")] == pytest.approx(median)
    assert row[names.index("partner")] in (0.0, 1.0)


def test_derived_features_follow_the_spec(features: FeatureSpec) -> None:
    record = {name: [None] for name in features.input_columns} | {
        "tenure": [10],
        "total_charges": [500.0],
        "phone_service": [True],
        "multiple_lines": ["Yes"],
        "online_security": ["Yes"],
        "tech_support": ["No"],
        "streaming_tv": ["No internet service"],
    }
    row = transform(record, features)[0]
    names = features.feature_names
    assert row[names.index("charges_per_month")] == pytest.approx(50.0)
    assert row[names.index("services")] == 3.0


def test_first_month_customers_do_not_divide_by_zero(frame: pl.DataFrame, features: FeatureSpec) -> None:
    record = _record(frame, 0) | {"tenure": [0], "total_charges": [None]}
    assert np.all(np.isfinite(transform(record, features)[0][: len(features.numeric)]))


def test_vocabulary_is_learned_from_training_rows_only(frame: pl.DataFrame, spec: DatasetSpec) -> None:
    fitted = fit_features(frame.filter(pl.col("contract") != "Two year"), spec)
    contract = next(c for c in fitted.categorical if c.name == "contract")
    assert contract.vocabulary == ("Month-to-month", "One year")


def test_spec_round_trips_through_json(features: FeatureSpec) -> None:
    assert FeatureSpec.from_json(features.to_json()) == features


def test_missing_columns_are_named(frame: pl.DataFrame, features: FeatureSpec) -> None:
    with pytest.raises(DataValidationError, match="missing feature columns: tenure"):
        transform(frame.drop("tenure"), features)


def test_chunked_arrow_input_is_accepted(frame: pl.DataFrame, features: FeatureSpec) -> None:
    table = pa.concat_tables([frame.head(10).to_arrow(), frame.slice(10).to_arrow()])
    assert np.array_equal(transform(table, features), transform(frame, features), equal_nan=True)


def test_the_one_record_path_gives_the_batch_rows_exactly(frame: pl.DataFrame, features: FeatureSpec) -> None:
    batch = transform(frame, features)
    row_transform = RowTransform(features)
    for row, record in enumerate(frame.iter_rows(named=True)):
        assert np.array_equal(row_transform(record), batch[row], equal_nan=True), f"row {row}"


@pytest.mark.parametrize(
    "change",
    [
        {"contract": "Weekly", "payment_method": None},  # unknown and missing categories
        {"total_charges": None, "partner": None, "tenure": None},  # missing numbers and booleans
        {"tenure": 0, "total_charges": None},  # the ratio's floor
        {"monthly_charges": float("nan")},  # NaN is a missing number
        {"multiple_lines": "No phone service", "streaming_tv": "Yes", "phone_service": True},
    ],
)
def test_the_one_record_path_handles_gaps_as_the_batch_path_does(
    frame: pl.DataFrame, features: FeatureSpec, change: dict[str, object]
) -> None:
    record = frame.row(3, named=True) | change
    expected = transform({name: [value] for name, value in record.items()}, features)[0]
    assert np.array_equal(RowTransform(features)(record), expected, equal_nan=True)


def test_the_one_record_path_names_missing_fields(frame: pl.DataFrame, features: FeatureSpec) -> None:
    record = frame.row(0, named=True)
    del record["tenure"], record["contract"]
    with pytest.raises(DataValidationError, match="missing feature columns: tenure, contract"):
        RowTransform(features)(record)
