"""Normalisation: raw or canonical source columns become the spec's canonical, typed columns."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pytest

from churn_mlops.data.normalize import normalize
from churn_mlops.data.spec import DatasetSpec, Kind
from churn_mlops.errors import DataValidationError
from tests.factories import raw_customers, with_value


def _expected_dtype(spec: DatasetSpec, name: str) -> pl.DataType:
    if name == spec.id.name:
        return pl.String()
    if name == spec.target.name:
        return pl.Boolean()
    column = spec.feature(name)
    if column.type is Kind.NUMERIC:
        return pl.Int64() if column.integer else pl.Float64()
    return pl.Boolean() if column.type is Kind.BOOLEAN else pl.String()


def _with_column(frame: pl.DataFrame, column: str, values: list[object]) -> pl.DataFrame:
    """The first len(values) rows of frame, one column replaced by values."""
    return frame.head(len(values)).with_columns(pl.Series(column, values))


def test_raw_columns_become_canonical_typed_columns_with_source_row_numbers(spec: DatasetSpec) -> None:
    raw = with_value(with_value(raw_customers(5), 0, "tenure", " 7 "), 0, "MonthlyCharges", "70.25")
    raw = with_value(with_value(raw, 1, "gender", "  Female "), 1, "Contract", "Two year")
    before = raw.clone()
    result = normalize(raw, spec)
    assert result.frame.columns == ["_row", *spec.columns]
    assert dict(result.frame.schema) == {"_row": pl.Int64()} | {
        name: _expected_dtype(spec, name) for name in spec.columns
    }
    assert result.frame.get_column("_row").to_list() == [1, 2, 3, 4, 5]
    first, second = result.frame.row(0, named=True), result.frame.row(1, named=True)
    assert (first["tenure"], first["monthly_charges"]) == (7, 70.25)
    assert (second["gender"], second["contract"]) == ("Female", "Two year")
    assert result.frame.get_column("customer_id").to_list() == raw.get_column("customerID").to_list()
    assert result.issues.height == 0
    assert result.ignored_columns == ()
    assert raw.equals(before), "the input frame is left as it was"


def test_raw_and_canonical_names_may_be_mixed_and_extra_columns_are_ignored(spec: DatasetSpec) -> None:
    raw = raw_customers(6)
    mixed = raw.rename({"customerID": "customer_id", "MonthlyCharges": "monthly_charges", "Churn": "churn"})
    mixed = mixed.with_columns(pl.lit("x").alias("notes"), pl.lit(1).alias("Tenure"))
    result = normalize(mixed, spec)
    assert result.frame.equals(normalize(raw, spec).frame)
    assert result.ignored_columns == ("notes", "Tenure")


def test_blanks_become_nulls_without_issues(spec: DatasetSpec) -> None:
    raw = _with_column(raw_customers(4), "TotalCharges", [" ", "", None, "  812.5 "])
    raw = with_value(with_value(raw, 0, "customerID", "   "), 1, "PaymentMethod", "")
    result = normalize(raw, spec)
    assert result.frame.get_column("total_charges").to_list() == [None, None, None, 812.5]
    assert result.frame.item(0, "customer_id") is None
    assert result.frame.item(1, "payment_method") is None
    assert result.issues.height == 0


@pytest.mark.parametrize(
    "spellings",
    [
        ["Yes", "No", "TRUE", "false", "Y", "n", "1", "0"],  # exact spellings only
        [" yes", "NO ", "True", "f", "y", "N", "1 ", " 0"],  # padded: trimmed first
        ["yEs", "nO", "t", "F", "YES", "No", "true", "FALSE"],
    ],
)
def test_yes_no_true_false_and_one_zero_text_become_booleans(spec: DatasetSpec, spellings: list[str]) -> None:
    raw = _with_column(raw_customers(8), "Partner", spellings)
    raw = raw.with_columns(pl.col("Partner").alias("Churn"))
    result = normalize(raw, spec)
    expected = [True, False] * 4
    assert result.frame.get_column("partner").to_list() == expected
    assert result.frame.get_column("churn").to_list() == expected
    assert result.issues.height == 0


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["No", "no", None], [False, False, None]),
        (["Yes", None, "Yes"], [True, None, True]),
    ],
)
def test_a_flag_column_of_one_value_keeps_it_and_its_nulls(
    spec: DatasetSpec, values: list[str | None], expected: list[bool | None]
) -> None:
    result = normalize(_with_column(raw_customers(3), "Dependents", values), spec)
    assert result.frame.get_column("dependents").to_list() == expected
    assert result.issues.height == 0


def test_typed_flag_sources_become_booleans(spec: DatasetSpec) -> None:
    raw = _with_column(raw_customers(4), "SeniorCitizen", [1, 0, 2, None])
    raw = raw.with_columns(
        pl.Series("Partner", [True, False, None, True]),
        pl.Series("Dependents", [1.0, 0.0, 0.0, 1.0]),
    )
    result = normalize(raw, spec)
    assert result.frame.get_column("senior_citizen").to_list() == [True, False, None, None]
    assert result.frame.get_column("partner").to_list() == [True, False, None, True]
    assert result.frame.get_column("dependents").to_list() == [True, False, False, True]
    assert result.issues.to_dicts() == [
        {"_row": 3, "column": "senior_citizen", "check": "not_boolean", "reason": "not a yes/no value: '2'"}
    ]


def test_typed_numeric_sources_are_checked_like_text(spec: DatasetSpec) -> None:
    raw = _with_column(raw_customers(3), "tenure", [3.0, 2.5, 12.0])
    raw = raw.with_columns(pl.Series("MonthlyCharges", [20, 30, 40], dtype=pl.Int32))
    result = normalize(raw, spec)
    assert result.frame.get_column("tenure").to_list() == [3, None, 12]
    assert result.frame.get_column("monthly_charges").to_list() == [20.0, 30.0, 40.0]
    assert result.frame.schema["monthly_charges"] == pl.Float64
    assert result.issues.select("_row", "column", "check").rows() == [(2, "tenure", "not_whole")]


def test_unconvertible_values_are_issues_naming_column_and_row_not_a_crash(spec: DatasetSpec) -> None:
    raw = raw_customers(6)
    for row, column, value in [
        (1, "tenure", "abc"),
        (1, "MonthlyCharges", "12,50"),
        (2, "Churn", "Perhaps"),
        (3, "MonthlyCharges", "inf"),
        (4, "tenure", "2.5"),
        (5, "Partner", "maybe"),
    ]:
        raw = with_value(raw, row, column, value)
    result = normalize(raw, spec)
    assert result.issues.schema == pl.Schema(
        {"_row": pl.Int64, "column": pl.String, "check": pl.String, "reason": pl.String}
    )
    assert sorted(result.issues.rows()) == [
        (2, "monthly_charges", "not_a_number", "not a number: '12,50'"),
        (2, "tenure", "not_a_number", "not a number: 'abc'"),
        (3, "churn", "not_boolean", "not a label ('Yes' or 'No'): 'Perhaps'"),
        (4, "monthly_charges", "not_finite", "not a finite number: 'inf'"),
        (5, "tenure", "not_whole", "not a whole number: '2.5'"),
        (6, "partner", "not_boolean", "not a yes/no value: 'maybe'"),
    ]
    frame = result.frame
    assert frame.get_column("tenure").is_null().to_list() == [False, True, False, False, True, False]
    assert frame.get_column("monthly_charges").is_null().to_list() == [False, True, False, True, False, False]
    assert frame.item(2, "churn") is None
    assert frame.item(5, "partner") is None
    assert frame.item(0, "tenure") == int(raw.item(0, "tenure")), "other rows are untouched"


@pytest.mark.parametrize(
    ("damage", "named", "hint"),
    [
        (lambda f: f.drop("MonthlyCharges"), "missing required columns: MonthlyCharges;", False),
        (lambda f: f.drop("tenure", "Contract"), "missing required columns: tenure, Contract;", False),
        (lambda f: f.drop("Churn"), "missing required columns: Churn;", True),
        (lambda f: f.rename({"Contract": "contract_type"}), "missing required columns: Contract;", False),
    ],
)
def test_a_missing_required_column_is_an_error_naming_it(
    spec: DatasetSpec, damage: Callable[[pl.DataFrame], pl.DataFrame], named: str, hint: bool
) -> None:
    with pytest.raises(DataValidationError) as caught:
        normalize(damage(raw_customers(3)), spec)
    message = str(caught.value)
    assert named in message
    assert ("--unlabelled" in message) is hint


def test_a_frame_of_unrelated_columns_lists_the_first_missing_ones_and_what_it_has(spec: DatasetSpec) -> None:
    with pytest.raises(DataValidationError) as caught:
        normalize(pl.DataFrame({"a": ["1"], "b": ["2"]}), spec)
    required = [spec.id.raw, *(c.raw for c in spec.features), spec.target.raw]
    shown = ", ".join(str(name) for name in required[:6])
    assert str(caught.value).startswith(
        f"missing required columns: {shown} and {len(required) - 6} more; the data has: a, b"
    )


def test_unlabelled_data_normalizes_without_the_target(spec: DatasetSpec) -> None:
    raw = raw_customers(4)
    result = normalize(raw.drop("Churn"), spec, require_target=False)
    assert result.frame.columns == ["_row", *(c for c in spec.columns if c != spec.target.name)]
    assert result.issues.height == 0
    labelled = normalize(raw, spec)
    assert result.frame.equals(labelled.frame.drop(spec.target.name))


def test_a_target_that_is_present_is_still_converted_when_not_required(spec: DatasetSpec) -> None:
    raw = _with_column(raw_customers(3), "Churn", ["Yes", "No", "Perhaps"])
    result = normalize(raw, spec, require_target=False)
    assert result.frame.get_column("churn").to_list() == [True, False, None]
    assert result.issues.select("_row", "column").rows() == [(3, "churn")]


def test_only_category_columns_of_clean_known_values_are_reported_known(spec: DatasetSpec) -> None:
    raw = with_value(with_value(raw_customers(20), 2, "Contract", " One year"), 3, "PaymentMethod", "Cash")
    known = normalize(raw, spec).known
    categories = {f.name for f in spec.features if f.categories}
    assert "gender" in known
    assert known <= categories
    assert not {"contract", "payment_method", "partner", "tenure"} & known


def test_a_large_table_whose_first_rows_hold_no_clean_value_is_normalized_in_full(spec: DatasetSpec) -> None:
    raw = raw_customers(1100).with_columns(
        pl.when(pl.int_range(pl.len()) < 1050).then(pl.lit(v)).otherwise(pl.col(f)).alias(f)
        for f, v in (("gender", None), ("Contract", "Monthly"))
    )
    result = normalize(raw, spec)
    assert result.frame.get_column("gender").null_count() == 1050
    assert result.frame.get_column("gender")[1060] == raw.get_column("gender")[1060]
    assert result.issues.height == 0
    assert "gender" in result.known
    assert "contract" not in result.known
