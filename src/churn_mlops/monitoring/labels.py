"""Delayed labels: outcomes (customer id, churned, observed at) from any source the data layer reads.

A row with a missing id, an outcome that is not a yes/no, or a time that does not parse (or
lies in the future; a time without an offset is UTC) is quarantined with its reasons, like any
ingest; rows in = added + already known + quarantined. An outcome for a customer the log has
never scored is stored and counted: its prediction may simply not have been profiled yet.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from churn_mlops.data.csv_recovery import MALFORMED
from churn_mlops.data.sources import Source, iter_source
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import DataValidationError
from churn_mlops.monitoring.store import MonitorStore
from churn_mlops.settings import Settings

OBSERVED = ("observed_at", "observedAt", "ObservedAt")
CHURNED = ("churned",)
TRUE = ("yes", "true", "1", "1.0", "y", "t", "churned")
FALSE = ("no", "false", "0", "0.0", "n", "f", "stayed")
FORMATS_WITH_OFFSET = ("%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M%z")
NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
BATCH_ROWS = 100_000


def ingest_labels(source: Source, spec: DatasetSpec, settings: Settings) -> dict[str, Any]:
    """Validate and store the outcomes in `source`; quarantine bad rows; return the counts."""
    now = datetime.now(UTC)
    store = MonitorStore(settings.serving_database_url)
    totals = {"rows_in": 0, "added": 0, "duplicates": 0, "quarantined": 0, "unknown_customers": 0}
    bad: list[pl.DataFrame] = []
    try:
        with store.errors():
            first_row = 1
            for raw in iter_source(source, BATCH_ROWS, recover=True):
                good, quarantined = parse_labels(raw, spec, now, first_row=first_row)
                added, known = store.outcomes.add_labels(good, source.describe()) if good.height else (0, 0)
                totals["unknown_customers"] += store.outcomes.unknown_customers(
                    good.get_column("customer_id")
                )
                totals["rows_in"] += raw.height
                totals["added"], totals["duplicates"] = totals["added"] + added, totals["duplicates"] + known
                totals["quarantined"] += quarantined.height
                bad += [quarantined] if quarantined.height else []
                first_row += raw.height
    finally:
        store.close()
    if totals["rows_in"] == 0:
        raise DataValidationError(f"{source.describe()}: no rows")
    path = _write_quarantine(bad, settings.quarantine_dir / "labels", now)
    return {"source": source.describe(), **totals, "quarantine_path": str(path) if path else None}


def parse_labels(
    raw: pl.DataFrame, spec: DatasetSpec, now: datetime, *, first_row: int = 1
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid outcomes as customer_id, churned, observed_ms; quarantined raw rows with `_reasons`)."""
    id_column = _find(raw, spec.id.source_names, "the customer id")
    churn_column = _find(raw, (*CHURNED, *spec.target.source_names), "the outcome (churned)")
    time_column = _find(raw, OBSERVED, "the time the outcome was observed (observed_at)")
    positive, negative = spec.target.positive.lower(), spec.target.negative.lower()
    # Parsed values go to columns of their own: the raw ones stay for the reasons and the quarantine.
    churn_text = pl.col(churn_column).cast(pl.String).str.strip_chars().str.to_lowercase()
    parsed = raw.with_row_index("_row", offset=first_row).with_columns(
        _customer_id=pl.col(id_column).cast(pl.String).str.strip_chars(),
        _churned=pl.when(churn_text.is_in([*TRUE, positive]))
        .then(True)
        .when(churn_text.is_in([*FALSE, negative]))
        .then(False),
        _observed=_timestamps(raw.schema[time_column], time_column),
    )
    raw_outcome = pl.col(churn_column).cast(pl.String).fill_null("missing")
    # A record the reader could not parse has that one reason (its fields are not to be trusted).
    unreadable = pl.col(MALFORMED) if MALFORMED in raw.columns else pl.lit(None, pl.String)
    reasons = (
        pl.when(unreadable.is_not_null())
        .then(pl.concat_list(unreadable))
        .otherwise(
            pl.concat_list(
                pl.when(pl.col("_customer_id").fill_null("") == "").then(pl.lit("customer id is missing")),
                pl.when(pl.col("_churned").is_null()).then(
                    pl.format("{} is not an outcome (yes/no, true/false, 1/0)", raw_outcome)
                ),
                pl.when(pl.col("_observed").is_null()).then(
                    pl.format("{} is not a time", pl.col(time_column).cast(pl.String).fill_null("missing"))
                ),
                pl.when(pl.col("_observed") > now + timedelta(days=1)).then(
                    pl.lit("observed_at is in the future")
                ),
            )
        )
        .list.drop_nulls()
    )
    checked = parsed.with_columns(_reasons=reasons)
    valid = checked.filter(pl.col("_reasons").list.len() == 0).select(
        customer_id="_customer_id", churned="_churned", observed_ms=pl.col("_observed").dt.epoch("ms")
    )
    quarantined = checked.filter(pl.col("_reasons").list.len() > 0)
    quarantined = quarantined.select(
        "_row",
        *(pl.col(c).cast(pl.String) for c in raw.columns if c != MALFORMED),
        _reasons=pl.col("_reasons").list.join("; "),
    )
    return valid, quarantined


def _find(raw: pl.DataFrame, names: tuple[str, ...], what: str) -> str:
    for name in names:
        if name in raw.columns:
            return name
    raise DataValidationError(f"labels: no column for {what}; expected one of {', '.join(names)}")


def _timestamps(dtype: pl.DataType, column: str) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        value = pl.col(column)
        return value.dt.convert_time_zone("UTC") if dtype.time_zone else value.dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.Date):
        return pl.col(column).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    text = pl.col(column).cast(pl.String).str.strip_chars().str.replace(r"Z$", "+00:00").str.replace("T", " ")
    aware = [
        text.str.to_datetime(f, strict=False, time_zone="UTC", time_unit="us") for f in FORMATS_WITH_OFFSET
    ]
    naive = [
        text.str.to_datetime(f, strict=False, time_unit="us").dt.replace_time_zone("UTC")
        for f in NAIVE_FORMATS
    ]
    return pl.coalesce(*aware, *naive)


def _write_quarantine(frames: list[pl.DataFrame], directory: Path, now: datetime) -> Path | None:
    if not frames:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{now.strftime('%Y%m%dT%H%M%SZ')}.parquet"
    pl.concat(frames, how="diagonal_relaxed").write_parquet(path)
    return path
