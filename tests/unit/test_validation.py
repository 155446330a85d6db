"""Validation: bad rows are quarantined with reasons, table-level failures stop the run."""

from __future__ import annotations

import math

import polars as pl
import pytest

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.validation import validate
from churn_mlops.errors import DataValidationError
from tests.factories import raw_customers, with_value

BROKEN = [
    # (0-based row, raw column, value, canonical column, reason fragment)
    (1, "tenure", "abc", "tenure", "not a number: 'abc'"),
    (2, "tenure", "-4", "tenure", "out of range [0, 120]: -4"),
    (3, "tenure", "2.5", "tenure", "not a whole number: '2.5'"),
    (4, "MonthlyCharges", "inf", "monthly_charges", "not a finite number: 'inf'"),
    (5, "MonthlyCharges", "NaN", "monthly_charges", "not a finite number: 'NaN'"),
    (6, "Contract", "Weekly", "contract", "unknown category 'Weekly'"),
    (7, "customerID", " ", "customer_id", "missing value"),
    (8, "customerID", None, "customer_id", "missing value"),
    (9, "Partner", "maybe", "partner", "not a yes/no value: 'maybe'"),
    (10, "Churn", "Perhaps", "churn", "not a label ('Yes' or 'No'): 'Perhaps'"),
    (11, "MonthlyCharges", "", "monthly_charges", "missing value"),
    (12, "SeniorCitizen", "2", "senior_citizen", "not a yes/no value: '2'"),
]


def test_valid_rows_become_canonical_typed_columns(spec: DatasetSpec) -> None:
    result = validate(raw_customers(30), spec)
    assert result.report.rows_valid == 30
    assert result.valid.columns == list(spec.columns)
    assert result.valid.schema["tenure"] == pl.Int64
    assert result.valid.schema["senior_citizen"] == pl.Boolean
    assert result.valid.schema["churn"] == pl.Boolean
    assert result.quarantine.height == 0


def test_every_broken_row_is_quarantined_with_its_reason(spec: DatasetSpec) -> None:
    raw = raw_customers(40)
    for row, column, value, _, _ in BROKEN:
        raw = with_value(raw, row, column, value)
    result = validate(raw, spec)
    quarantined = {r["_row"]: r for r in result.quarantine.to_dicts()}
    assert sorted(quarantined) == [row + 1 for row, *_ in BROKEN]
    for row, column, value, canonical, reason in BROKEN:
        record = quarantined[row + 1]
        assert record["_columns"] == canonical
        assert reason in record["_reasons"]
        assert record[column] == value or value is None or not value.strip()
    report = result.report
    assert report.rows_in == report.rows_valid + report.rows_quarantined == 40
    assert report.rows_quarantined == len(BROKEN)
    assert sum(f["rows"] for f in report.failures) == len(BROKEN)  # type: ignore[misc]


def test_a_row_with_several_problems_lists_them_all(spec: DatasetSpec) -> None:
    raw = with_value(with_value(raw_customers(10), 3, "tenure", "x"), 3, "Contract", "Weekly")
    record = validate(raw, spec).quarantine.row(0, named=True)
    assert record["_columns"] == "tenure; contract"
    assert record["_reasons"] == "not a number: 'x'; unknown category 'Weekly'"


@pytest.mark.parametrize("broken", [b for b in BROKEN if b[0] in {2, 6, 7, 11}], ids=lambda b: b[4])
def test_one_broken_row_among_clean_ones_is_quarantined(spec: DatasetSpec, broken: tuple) -> None:  # type: ignore[type-arg]
    row, column, value, canonical, reason = broken
    result = validate(with_value(raw_customers(40), row, column, value), spec)
    assert result.quarantine.get_column("_row").to_list() == [row + 1]
    assert result.quarantine.row(0, named=True)["_columns"] == canonical
    assert reason in result.quarantine.row(0, named=True)["_reasons"]
    assert result.report.rows_valid == 39


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("MonthlyCharges", 5000.0, "out of range [0, 1000]: 5000.0"),
        ("tenure", 121, "out of range [0, 120]: 121"),
    ],
)
def test_out_of_range_typed_values_are_quarantined(
    spec: DatasetSpec, column: str, value: float, reason: str
) -> None:
    typed = raw_customers(20).with_columns(
        pl.col("MonthlyCharges").cast(pl.Float64), pl.col("tenure").cast(pl.Int64)
    )
    broken = typed.with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(value).otherwise(pl.col(column)).alias(column)
    )
    result = validate(broken, spec)
    assert result.quarantine.get_column("_row").to_list() == [5]
    assert reason in result.quarantine.row(0, named=True)["_reasons"]
    assert validate(typed, spec).quarantine.height == 0


def test_blank_total_charges_are_nulls_not_failures(spec: DatasetSpec) -> None:
    raw = with_value(with_value(raw_customers(10), 0, "TotalCharges", " "), 0, "tenure", "0")
    result = validate(raw, spec)
    assert result.report.rows_quarantined == 0
    assert result.valid.item(0, "total_charges") is None


def test_any_spelling_of_yes_or_no_and_padded_values_are_accepted(spec: DatasetSpec) -> None:
    raw = raw_customers(30)
    respelled = raw.with_columns(
        pl.col("Partner").replace({"Yes": "YES", "No": "n"}),
        pl.col("Churn").replace({"Yes": "yes", "No": "False"}),
        pl.col("Dependents").replace({"Yes": "Y", "No": "no"}),
    )
    respelled = with_value(with_value(respelled, 0, "Dependents", " yEs "), 1, "gender", "  Female")
    expected = with_value(with_value(raw, 0, "Dependents", "Yes"), 1, "gender", "Female")
    result = validate(respelled, spec)
    assert result.report.rows_quarantined == 0
    assert result.valid.equals(validate(expected, spec).valid)


def test_typed_sources_normalise_like_text(spec: DatasetSpec) -> None:
    text = raw_customers(25)
    typed = text.with_columns(
        pl.col("SeniorCitizen").cast(pl.Int64),
        pl.col("Partner") == "Yes",
        pl.col("tenure").cast(pl.Int32),
        pl.col("MonthlyCharges").cast(pl.Float64),
        pl.col("TotalCharges").str.strip_chars().replace("", None).cast(pl.Float64),
    )
    assert validate(typed, spec).valid.equals(validate(text, spec).valid)


def test_canonical_column_names_are_accepted(spec: DatasetSpec) -> None:
    raw = raw_customers(10)
    canonical = raw.rename({c.raw: c.name for c in spec.features if c.raw} | {"customerID": "customer_id"})
    assert validate(canonical, spec).valid.equals(validate(raw, spec).valid)


def test_extra_columns_are_reported_and_ignored(spec: DatasetSpec) -> None:
    result = validate(raw_customers(10).with_columns(pl.lit("x").alias("notes")), spec)
    assert result.report.ignored_columns == ["notes"]
    assert "notes" not in result.valid.columns


def test_unlabelled_data_validates_without_a_target(spec: DatasetSpec) -> None:
    result = validate(raw_customers(10).drop("Churn"), spec, require_target=False)
    assert result.report.rows_valid == 10
    assert result.report.target_rate is None
    assert "churn" not in result.valid.columns


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: f.head(0), "no rows"),
        (lambda f: f.drop("tenure", "Contract"), "missing required columns: tenure, Contract"),
        (lambda f: f.drop("Churn"), "pass --unlabelled"),
        (lambda f: with_value(f, 5, "customerID", f.item(2, "customerID")), "duplicate customer_id"),
        (lambda f: f.with_columns(Churn=pl.lit("No")), "target rate 0.000"),
        (lambda f: f.with_columns(Contract=pl.lit("Weekly")), "does not seem to match"),
    ],
)
def test_table_level_failures_stop_the_run(spec: DatasetSpec, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataValidationError, match=message):
        validate(damage(raw_customers(40)), spec)


def test_duplicate_id_error_names_the_rows(spec: DatasetSpec) -> None:
    raw = raw_customers(20)
    raw = with_value(raw, 9, "customerID", raw.item(4, "customerID"))
    with pytest.raises(DataValidationError, match=r"at rows 5, 10"):
        validate(raw, spec)


def test_target_rate_is_reported(spec: DatasetSpec) -> None:
    raw = raw_customers(200)
    expected = (raw.get_column("Churn") == "Yes").mean()
    assert math.isclose(validate(raw, spec).report.target_rate or 0, expected or 0)


def test_a_record_the_reader_marked_is_quarantined_with_its_reason_alone(spec: DatasetSpec) -> None:
    raw = raw_customers(10)
    duplicate_id = raw.item(0, "customerID")
    reasons = [None] * 10
    reasons[4] = "line 6: 22 fields, the header has 21"
    marked = raw.with_columns(
        pl.when(pl.int_range(pl.len()) == 4)
        .then(pl.lit(duplicate_id))
        .otherwise("customerID")
        .alias("customerID"),
        pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("abc")).otherwise("tenure").alias("tenure"),
        pl.Series("_malformed", reasons, pl.String),
    )
    result = validate(marked, spec)
    assert (result.report.rows_valid, result.report.rows_quarantined) == (9, 1)
    assert result.report.ignored_columns == []
    assert result.report.failures == [
        {
            "column": "_record",
            "check": "malformed",
            "rows": 1,
            "example": "line 6: 22 fields, the header has 21",
        }
    ]
    record = result.quarantine.row(0, named=True)
    assert (record["_row"], record["_columns"], record["_reasons"]) == (5, "_record", reasons[4])
    assert "_malformed" not in result.quarantine.columns


def test_a_clean_table_quarantines_nothing_in_the_shape_of_a_quarantine(spec: DatasetSpec) -> None:
    raw = raw_customers(20).with_columns(pl.col("tenure").cast(pl.Int64))
    clean = validate(raw, spec)
    broken = validate(with_value(raw, 4, "Contract", "Weekly"), spec)
    assert clean.quarantine.height == 0
    assert broken.quarantine.height == 1
    assert clean.quarantine.schema == broken.quarantine.schema
    assert clean.report.failures == []
    assert clean.report.rows_valid == 20


@pytest.mark.parametrize("column", ["Contract", "PaymentMethod", "gender"])
def test_a_category_unknown_in_any_row_is_found_whatever_the_others_hold(
    spec: DatasetSpec, column: str
) -> None:
    raw = with_value(raw_customers(30), 29, column, "Unheard of")
    for _ in range(2):  # the second run reuses what the first built
        result = validate(raw, spec)
        assert result.quarantine.get_column("_row").to_list() == [30]
        assert result.quarantine.row(0, named=True)["_reasons"] == "unknown category 'Unheard of'"


def test_values_first_seen_deep_in_a_large_table_are_judged_like_any_other(spec: DatasetSpec) -> None:
    raw = raw_customers(1500).with_columns(pl.lit("No").alias("Partner"))
    raw = with_value(with_value(raw, 1300, "Partner", "YES"), 1350, "Contract", " One year")
    result = validate(with_value(raw, 1400, "PaymentMethod", "Cash"), spec)
    assert result.quarantine.get_column("_row").to_list() == [1401]
    assert result.quarantine.row(0, named=True)["_reasons"] == "unknown category 'Cash'"
    partner = result.valid.get_column("partner")
    assert partner.sum() == 1
    assert partner[1300]
    assert result.valid.row(1350, named=True)["contract"] == "One year"
