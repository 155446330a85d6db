"""The Spark engine's union table: what executors encode, the driver reads back unchanged."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from churn_mlops.batch.scoring import ScoredBatch
from churn_mlops.batch.spark_table import conform, encode, failure, read_back, spark_schema
from churn_mlops.errors import (
    ChecksumError,
    ChurnError,
    DataValidationError,
    ModelNotFoundError,
    SourceError,
)
from churn_mlops.monitoring.profile import FeatureCounts, Profile, ScoreCounts
from churn_mlops.monitoring.reference import SCORE_BINS

OUTPUT_SCHEMA = {
    "_part": pl.Int32(),
    "customer_id": pl.String(),
    "churn_probability": pl.Float64(),
    "prediction": pl.Int8(),
    "risk": pl.String(),
    "model_version": pl.String(),
    "scored_at": pl.Datetime("us", "UTC"),
    "run_date": pl.Date(),
    "revenue_at_risk": pl.Float64(),
    "_quarantined": pl.String(),
    "_failed": pl.String(),
    "_profile": pl.String(),
    "_scorer": pl.String(),
}
SCORED_AT = datetime(2026, 11, 29, 8, 30, tzinfo=UTC)


def _scores(ids: list[str], probabilities: list[float]) -> pl.DataFrame:
    high = [p >= 0.5 for p in probabilities]
    return pl.DataFrame(
        {
            "customer_id": ids,
            "churn_probability": probabilities,
            "prediction": [int(h) for h in high],
            "risk": ["high" if h else "low" for h in high],
            "model_version": ["3"] * len(ids),
            "scored_at": [SCORED_AT] * len(ids),
            "run_date": [date(2026, 11, 29)] * len(ids),
            "revenue_at_risk": [p * 100 if p > 0.2 else None for p in probabilities],
        },
        schema_overrides={"prediction": pl.Int8, "scored_at": pl.Datetime("us", "UTC")},
    )


def _quarantine(rows: list[int], tenure: list[str | None]) -> pl.DataFrame:
    """Quarantined raw rows as validation gives them: every value as text, row numbers, reasons."""
    return pl.DataFrame(
        {
            "_row": rows,
            "customerID": [f"Q-{r}" for r in rows],
            "tenure": tenure,
            "Contract": ['Two "year"'] + [None] * (len(rows) - 1),
            "_columns": ["tenure"] * len(rows),
            "_reasons": [f"not a number: {t!r}" for t in tenure],
        },
        schema_overrides={"_row": pl.Int64, "tenure": pl.String},
    )


def _profile(rows: int, decisions: tuple[int, int], unknown: str) -> Profile:
    scores = np.zeros(SCORE_BINS, np.int64)
    scores[[120, 870]] = decisions
    return Profile(
        rows,
        {
            "tenure": FeatureCounts(np.array([rows - 1, 0, 0]), missing=1),
            "contract": FeatureCounts(np.array([0, rows - 1]), outside=1, unknown_values={unknown: 1}),
        },
        scores,
        np.array(decisions),
        np.array([0.12 * decisions[0], 0.87 * decisions[1]]),
        {"contract=One year": ScoreCounts.of([0.12, 0.87], [0, 1])},
    )


def _write(folder: Path, part: int, frame: pl.DataFrame) -> None:
    """A Parquet part file named as Spark names them."""
    frame.write_parquet(folder / f"part-{part:05d}-{uuid.uuid4()}-c000.snappy.parquet")


def _read(folder: Path, batch_rows: int, first_row: int = 1) -> list[ScoredBatch]:
    return list(read_back(folder, batch_rows, first_row))


def _quarantined(batches: list[ScoredBatch]) -> pl.DataFrame:
    return pl.concat([b.quarantine for b in batches if b.quarantine.height])


# Partition 0 scored two executor batches (rows 1-4 and 5-7), partition 1 one batch (rows 1-3).
PART_0 = [
    ScoredBatch(
        _scores(["a", "b"], [0.9, 0.1]), _quarantine([2, 4], ["abc", None]), 4, _profile(2, (1, 1), "X")
    ),
    ScoredBatch(_scores(["c", "d"], [0.3, 0.6]), _quarantine([6], ["é\n"]), 3, _profile(2, (1, 1), "Y")),
]
PART_1 = [ScoredBatch(_scores(["e", "f"], [0.05, 0.7]), _quarantine([1], ["-"]), 3, _profile(2, (1, 1), "X"))]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Spark's output folder for two partitions, the second written first."""
    folder = tmp_path / "scores-0"
    folder.mkdir()
    _write(folder, 1, pl.concat([encode(1, b) for b in PART_1]))
    _write(folder, 0, pl.concat([encode(0, b) for b in PART_0]))
    (folder / "_SUCCESS").write_text("")
    return folder


@pytest.mark.parametrize("batch_rows", [1, 3, 1000])
def test_scores_come_back_in_partition_order_with_their_types(folder: Path, batch_rows: int) -> None:
    batches = _read(folder, batch_rows)
    scores = pl.concat([b.scores for b in batches])
    expected = pl.concat([b.scores for b in PART_0 + PART_1])
    assert scores.equals(expected)
    assert scores.schema == expected.schema
    assert sum(b.rows_in for b in batches) == 4 + 3 + 3


@pytest.mark.parametrize("batch_rows", [1, 3, 1000])
@pytest.mark.parametrize("first_row", [1, 101])
def test_quarantined_rows_come_back_with_source_row_numbers(
    folder: Path, batch_rows: int, first_row: int
) -> None:
    quarantined = _quarantined(_read(folder, batch_rows, first_row))
    # Partition 1 starts after partition 0's seven rows.
    expected_rows = [2, 4, 6, 7 + 1]
    assert quarantined.get_column("_row").to_list() == [r + first_row - 1 for r in expected_rows]
    original = pl.concat([b.quarantine for b in PART_0 + PART_1])
    assert quarantined.drop("_row").equals(original.drop("_row")), "raw text, nulls and reasons kept"
    assert quarantined.columns == original.columns
    assert quarantined.schema["_row"] == pl.Int64


@pytest.mark.parametrize("batch_rows", [1, 1000])
def test_each_partitions_profile_comes_back_summed(folder: Path, batch_rows: int) -> None:
    profiles = [b.profile for b in _read(folder, batch_rows) if b.profile is not None]
    total = profiles[0]
    for profile in profiles[1:]:
        total = total + profile
    assert total.rows == 6
    assert total.decisions.tolist() == [3, 3]
    assert total.scores[120] == total.scores[870] == 3
    assert total.decided_sum.tolist() == pytest.approx([0.36, 2.61])
    assert total.features["tenure"].missing == 3
    assert total.features["contract"].unknown_values == {"X": 2, "Y": 1}
    assert total.slices["contract=One year"].decisions.tolist() == [3, 3]


def test_batches_without_a_profile_come_back_without_one(tmp_path: Path) -> None:
    batch = ScoredBatch(_scores(["a"], [0.4]), _quarantine([1], ["x"]), 2)
    _write(tmp_path, 0, encode(0, batch))
    [back] = _read(tmp_path, 1000)
    assert back.profile is None
    assert back.rows_in == 2
    assert back.scores.equals(batch.scores)


@pytest.mark.parametrize("batch_rows", [1, 1000])
def test_what_scored_each_batch_comes_back_without_counting_as_a_row(tmp_path: Path, batch_rows: int) -> None:
    batches = [
        ScoredBatch(_scores(["a", "b"], [0.4, 0.8]), pl.DataFrame(), 2, scorer="compiled"),
        ScoredBatch(_scores(["c"], [0.1]), pl.DataFrame(), 1, _profile(1, (1, 0), "X"), scorer="lightgbm"),
    ]
    _write(tmp_path, 0, pl.concat([encode(0, b) for b in batches]))
    back = _read(tmp_path, batch_rows)
    assert {s for b in back if b.scorer for s in b.scorer.split("+")} == {"compiled", "lightgbm"}
    assert sum(b.rows_in for b in back) == 3
    assert pl.concat([b.scores for b in back]).equals(pl.concat([b.scores for b in batches]))


def test_a_partition_with_nothing_quarantined_comes_back_with_an_empty_quarantine(tmp_path: Path) -> None:
    batch = ScoredBatch(_scores(["a", "b"], [0.4, 0.8]), pl.DataFrame(), 2)
    _write(tmp_path, 0, encode(0, batch))
    [back] = _read(tmp_path, 1000)
    assert back.quarantine.height == 0
    assert back.scores.get_column("customer_id").to_list() == ["a", "b"]


@pytest.mark.parametrize(
    "error",
    [
        DataValidationError("missing required columns: tenure; the data has: a, b"),
        SourceError("customers.csv: cannot read as CSV"),
        ModelNotFoundError("no version '42' of model 'churn'"),
        ChecksumError("model.txt: checksum mismatch"),
    ],
)
def test_a_failed_partition_reraises_the_executors_error(tmp_path: Path, error: ChurnError) -> None:
    _write(tmp_path, 0, encode(0, PART_0[0]))
    _write(tmp_path, 1, failure(1, error))
    batches = read_back(tmp_path, 1000, 1)
    assert next(batches).scores.height == 2, "partitions before the failure are read"
    with pytest.raises(type(error)) as caught:
        next(batches)
    assert type(caught.value) is type(error)
    assert str(caught.value) == str(error)


def test_an_error_class_the_driver_does_not_know_is_a_churn_error(tmp_path: Path) -> None:
    class PluginError(ChurnError):
        pass

    _write(tmp_path, 0, failure(0, PluginError("the plugin gave up")))
    with pytest.raises(ChurnError) as caught:
        _read(tmp_path, 1000)
    assert type(caught.value) is ChurnError
    assert str(caught.value) == "the plugin gave up"


def test_conform_fills_missing_columns_with_typed_nulls_and_drops_others() -> None:
    frame = pl.DataFrame({"prediction": [1, 0], "_part": [4, 4], "customer_id": ["a", "b"], "extra": [1, 2]})
    conformed = conform(frame)
    assert dict(conformed.schema) == OUTPUT_SCHEMA
    assert conformed.get_column("_part").to_list() == [4, 4]
    assert conformed.get_column("prediction").to_list() == [1, 0]
    assert conformed.get_column("customer_id").to_list() == ["a", "b"]
    missing = [name for name in OUTPUT_SCHEMA if name not in frame.columns]
    assert all(conformed.get_column(name).null_count() == 2 for name in missing)


def test_encoded_and_failure_frames_have_the_output_schema() -> None:
    assert dict(encode(2, PART_0[0]).schema) == OUTPUT_SCHEMA
    assert dict(failure(2, ChurnError("x")).schema) == OUTPUT_SCHEMA
    assert failure(2, ChurnError("x")).height == 1


def test_the_spark_schema_lists_every_output_column_with_its_spark_type() -> None:
    assert spark_schema() == (
        "`_part` int, `customer_id` string, `churn_probability` double, `prediction` tinyint, "
        "`risk` string, `model_version` string, `scored_at` timestamp, `run_date` date, "
        "`revenue_at_risk` double, `_quarantined` string, `_failed` string, `_profile` string, "
        "`_scorer` string"
    )
