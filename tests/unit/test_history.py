"""Customer history: generated snapshots, their validation, and the newest snapshot per customer."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from churn_mlops.data.history import OBSERVED_AT, SNAPSHOT_AT, history
from churn_mlops.data.snapshots import describe_rows, newest_snapshots
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.validation import validate
from churn_mlops.errors import DataValidationError
from tests.factories import raw_customers, with_value

END = datetime(2026, 6, 1, tzinfo=UTC)


def _history(rows: int = 600, days: int = 90, seed: int = 3) -> pl.DataFrame:
    frame = pl.concat(list(history(rows, days=days, seed=seed, end=END)))
    return frame.with_columns(
        pl.col(SNAPSHOT_AT).str.to_datetime(time_zone="UTC"),
        pl.col(OBSERVED_AT).str.to_datetime(time_zone="UTC"),
    )


def _snapshots(raw: pl.DataFrame, *times: str) -> pl.DataFrame:
    """The same customers once per time, as text (a CSV with history reads like this)."""
    return pl.concat([raw.with_columns(pl.lit(t).alias(SNAPSHOT_AT)) for t in times])


def test_history_depends_on_the_seed_and_stays_before_its_end() -> None:
    assert _history(seed=1).equals(_history(seed=1))
    assert not _history(seed=1).equals(_history(seed=2))
    frame = _history()
    assert frame.get_column(SNAPSHOT_AT).max() < END  # type: ignore[operator]
    assert frame.get_column(OBSERVED_AT).max() < END  # type: ignore[operator]
    assert frame.get_column("customerID").n_unique() == 600
    assert frame.height > 600 * 2, "customers change over 90 days: bills at least"


def test_every_label_has_a_snapshot_before_it_and_churners_none_after() -> None:
    frame = _history()
    first = frame.group_by("customerID").agg(pl.col(SNAPSHOT_AT).min(), pl.col(OBSERVED_AT).first())
    assert (first.get_column(SNAPSHOT_AT) <= first.get_column(OBSERVED_AT)).all()
    after = frame.filter(pl.col(SNAPSHOT_AT) > pl.col(OBSERVED_AT))
    assert after.filter(pl.col("Churn") == "Yes").height == 0, "a churner has left: no later snapshot"
    assert after.get_column("customerID").n_unique() > 50, "stayers go on changing after their label"
    labels = frame.select("customerID", "Churn", OBSERVED_AT).unique()
    assert labels.get_column("customerID").is_unique().all(), "one label, one time, per customer"


def test_contracts_change_after_the_label_and_bills_follow_tenure() -> None:
    frame = _history().sort("customerID", SNAPSHOT_AT)
    at_label = frame.filter(pl.col(SNAPSHOT_AT) <= pl.col(OBSERVED_AT)).group_by("customerID").last()
    newest = frame.group_by("customerID").last()
    both = at_label.join(newest, on="customerID", suffix="_newest")
    changed = both.filter(pl.col("Contract") != pl.col("Contract_newest"))
    assert changed.height > 10
    assert (changed.get_column("Contract") == "Month-to-month").all()
    steps = frame.with_columns(
        pl.col("tenure").diff().over("customerID").alias("months"),
        pl.col("TotalCharges").diff().over("customerID").alias("billed"),
        pl.col("MonthlyCharges").shift().over("customerID").alias("rate"),  # a bill is for the month gone by
    ).drop_nulls("months")
    assert set(steps.get_column("months").unique()) <= {0, 1}
    billed = steps.filter(pl.col("months") == 1, pl.col("billed").is_not_null())
    assert (billed.get_column("billed") - billed.get_column("rate")).abs().max() < 0.011  # type: ignore[operator]


def test_generated_history_passes_the_telco_spec_with_every_snapshot_kept(spec: DatasetSpec) -> None:
    raw = pl.concat(list(history(300, days=60, seed=5, end=END)))
    result = validate(raw, spec)
    assert result.report.rows_quarantined == 0
    assert result.valid.height == raw.height
    assert result.valid.schema["snapshot_at"] == pl.Datetime("us", "UTC")
    assert result.valid.schema["churn_observed_at"] == pl.Datetime("us", "UTC")


def test_timestamps_in_any_iso_form_become_utc(spec: DatasetSpec) -> None:
    raw = raw_customers(6).with_columns(
        pl.Series(
            SNAPSHOT_AT,
            [
                "2026-01-02",
                "2026-01-02T03:04:05",
                "2026-01-02 03:04:05.250",
                "2026-01-02T03:04:05Z",
                " 2026-01-02T05:04:05+02:00 ",
                "2026-01-02T03:04",
            ],
        )
    )
    times = validate(raw, spec).valid.get_column(SNAPSHOT_AT).to_list()
    assert times[0] == datetime(2026, 1, 2, tzinfo=UTC)
    assert times[1] == times[3] == times[4] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert times[2] == datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
    assert times[5] == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def test_bad_timestamps_are_quarantined_naming_the_row(spec: DatasetSpec) -> None:
    raw = _snapshots(raw_customers(20), "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")
    raw = with_value(raw, 3, SNAPSHOT_AT, "yesterday")
    raw = with_value(raw, 24, SNAPSHOT_AT, "2026-13-40")
    raw = with_value(raw, 30, SNAPSHOT_AT, "  ")
    result = validate(raw, spec)
    assert result.report.rows_valid == 37
    quarantined = {r["_row"]: (r["_columns"], r["_reasons"]) for r in result.quarantine.to_dicts()}
    assert quarantined == {
        4: ("snapshot_at", "not an ISO 8601 timestamp: 'yesterday'"),
        25: ("snapshot_at", "not an ISO 8601 timestamp: '2026-13-40'"),
        31: ("snapshot_at", "missing value"),
    }


def test_snapshots_repeat_ids_but_not_an_id_at_one_time(spec: DatasetSpec) -> None:
    raw = _snapshots(raw_customers(10), "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")
    assert validate(raw, spec).valid.height == 20
    twice = _snapshots(raw_customers(10), "2026-01-01", "2026-01-01T00:00:00Z")
    with pytest.raises(
        DataValidationError, match=r"duplicate customer_id and snapshot_at: 10 snapshots .* rows 1, 11"
    ):
        validate(twice, spec)
    with pytest.raises(DataValidationError, match="duplicate customer_id: 10 ids"):
        validate(pl.concat([raw_customers(10), raw_customers(10)]), spec)


def test_a_datetime_column_is_taken_as_is_and_naive_values_as_utc(spec: DatasetSpec) -> None:
    raw = raw_customers(3).with_columns(
        pl.Series("Churn", ["Yes", "No", "No"]),
        pl.Series(
            SNAPSHOT_AT, [datetime(2026, 1, 1, 12), datetime(2026, 1, 2), None], dtype=pl.Datetime("ms")
        ),
    )
    result = validate(raw, spec)
    assert result.valid.get_column(SNAPSHOT_AT).to_list() == [
        datetime(2026, 1, 1, 12, tzinfo=UTC),
        datetime(2026, 1, 2, tzinfo=UTC),
    ]
    assert result.quarantine.get_column("_reasons").to_list() == ["missing value"]


def test_training_rows_are_each_customers_newest_snapshot(spec: DatasetSpec) -> None:
    raw = _snapshots(raw_customers(10), "2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z")
    raw = raw.with_columns(
        pl.when(pl.col(SNAPSHOT_AT).str.starts_with("2026-02"))
        .then(pl.lit("Two year"))
        .otherwise(pl.col("Contract"))
        .alias("Contract")
    )
    valid = validate(raw, spec).valid
    newest = newest_snapshots(valid, spec)
    assert newest.height == 10
    assert newest.columns == list(spec.columns), "the times are lineage, not features"
    assert (newest.get_column("contract") == "Two year").all()
    assert describe_rows(valid, spec) == "lake: newest snapshot of each of 10 customers (20 snapshots)"
    plain = validate(raw_customers(10), spec).valid
    assert newest_snapshots(plain, spec).equals(plain)
    assert describe_rows(plain, spec) == "lake: all 10 rows"
