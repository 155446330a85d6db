"""The table the Spark engine's executors write and its driver reads back.

Each executor writes one union table per partition: the scores, the quarantined rows encoded as
JSON and one row per batch with what scored it and its monitoring profile (JSON), or one row
carrying the ChurnError that stopped it, all tagged with the partition number.
The driver reads the Parquet parts back in partition order and turns them into the local
engine's ScoredBatches, with source row numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from churn_mlops import errors
from churn_mlops.batch.scoring import SCORE_COLUMNS, ScoredBatch, empty_scores
from churn_mlops.data.normalize import ROW
from churn_mlops.errors import ChurnError
from churn_mlops.monitoring.profile import Profile

PART, QUARANTINED, FAILED, PROFILE, SCORER = "_part", "_quarantined", "_failed", "_profile", "_scorer"
_SPARK_TYPES: dict[object, str] = {
    pl.String: "string",
    pl.Float64: "double",
    pl.Int8: "tinyint",
    pl.Int32: "int",
    pl.Date: "date",
    pl.Datetime: "timestamp",
}


def encode(part: int, scored: ScoredBatch) -> pl.DataFrame:
    """One union frame: the scores, then the quarantined rows as JSON, all tagged with the partition."""
    rows = scored.quarantine
    quarantined = (
        rows.select(pl.struct(pl.all()).struct.json_encode().alias(QUARANTINED))
        if rows.height
        else pl.DataFrame(schema={QUARANTINED: pl.String})
    )
    parts = [scored.scores, quarantined]
    if scored.profile is not None or scored.scorer is not None:
        profile = None if scored.profile is None else json.dumps(scored.profile.to_json())
        parts.append(pl.DataFrame({SCORER: [scored.scorer], PROFILE: [profile]}, schema=_META))
    frame = pl.concat(parts, how="diagonal_relaxed")
    return conform(frame.with_columns(pl.lit(part, pl.Int32).alias(PART)))


_META = {SCORER: pl.String, PROFILE: pl.String}


def failure(part: int, exc: ChurnError) -> pl.DataFrame:
    """The one-row frame that carries an executor's ChurnError back to the driver."""
    failed = {"type": type(exc).__name__, "message": str(exc)}
    return conform(pl.DataFrame({PART: [part], FAILED: [json.dumps(failed)]}))


def _output_schema() -> dict[str, pl.DataType]:
    return {
        PART: pl.Int32(),
        **empty_scores().schema,
        QUARANTINED: pl.String(),
        FAILED: pl.String(),
        PROFILE: pl.String(),
        SCORER: pl.String(),
    }


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame in the output schema, missing columns as nulls."""
    return frame.select(
        pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
        for name, dtype in _output_schema().items()
    )


def spark_schema() -> str:
    return ", ".join(
        f"`{name}` {_SPARK_TYPES[dtype.base_type()]}" for name, dtype in _output_schema().items()
    )


def read_back(folder: Path, batch_rows: int, first_row: int) -> Iterator[ScoredBatch]:
    """Stream Spark's output in partition order, turning partition row numbers into source ones."""
    part, base, seen = -1, 0, first_row - 1
    for path in sorted(folder.glob("part-*.parquet"), key=lambda p: int(p.name.split("-")[1])):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            frame = arrow_frame(batch)
            if frame.height and frame.item(0, PART) != part:
                part, base = frame.item(0, PART), seen
            decoded = _decode(frame, base)
            yield decoded
            seen += decoded.rows_in


def _decode(frame: pl.DataFrame, base: int) -> ScoredBatch:
    """Split a chunk of Spark's output into scores and quarantined rows, raising an executor's error."""
    failed = frame.get_column(FAILED).drop_nulls()
    if failed.len():
        raise _executor_error(json.loads(failed.item(0)))
    meta = frame.filter(pl.col(PROFILE).is_not_null() | pl.col(SCORER).is_not_null())
    profiles = meta.get_column(PROFILE).drop_nulls()
    scorers = set(meta.get_column(SCORER).drop_nulls())
    rows = frame.filter(pl.col(PROFILE).is_null() & pl.col(SCORER).is_null())
    quarantined = rows.get_column(QUARANTINED)
    scores = rows.filter(quarantined.is_null()).select(SCORE_COLUMNS).cast(empty_scores().schema)
    profile = None
    for document in profiles:
        part = Profile.from_json(json.loads(document))
        profile = part if profile is None else profile + part
    scorer = "+".join(sorted(scorers)) or None
    quarantine = _quarantined_rows(quarantined.drop_nulls(), base)
    return ScoredBatch(scores, quarantine, rows.height, profile, scorer=scorer)


def _quarantined_rows(encoded: pl.Series, base: int) -> pl.DataFrame:
    """The quarantined rows from their JSON (every raw value as text), numbered from `base` + 1."""
    if encoded.len() == 0:
        return pl.DataFrame()
    rows = encoded.str.json_decode(infer_schema_length=None).struct.unnest()
    return rows.with_columns(pl.exclude(ROW).cast(pl.String), pl.col(ROW).cast(pl.Int64) + base)


def _executor_error(failed: Mapping[str, str]) -> ChurnError:
    """The ChurnError an executor raised, rebuilt with its own class and message."""
    kind = getattr(errors, failed["type"], ChurnError)
    return (kind if isinstance(kind, type) and issubclass(kind, ChurnError) else ChurnError)(
        failed["message"]
    )


def arrow_frame(batch: pa.RecordBatch) -> pl.DataFrame:
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    return frame
