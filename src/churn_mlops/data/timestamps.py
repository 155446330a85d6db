"""Timestamps in source data: snapshot and label times, parsed to UTC microseconds.

Text is read as ISO 8601 (a date, or a date and time with `T` or a space, optional fractional
seconds, optional `Z` or offset); a time without an offset is taken as UTC, as are naive
datetime columns. Anything else is not a timestamp and the row is quarantined.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

TIMESTAMP = pl.Datetime("us", "UTC")
_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M%#z",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


def parse_text(text: pl.Expr) -> pl.Expr:
    """Trimmed ISO 8601 text to a UTC timestamp; null where it is not one."""
    spaced = text.str.replace("T", " ", literal=True)
    return pl.coalesce(
        spaced.str.to_datetime(f, strict=False, time_zone="UTC", time_unit="us") for f in _FORMATS
    )


def from_temporal(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A date or datetime column as a UTC timestamp (naive values are taken as UTC)."""
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        return value.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    return value.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def is_temporal(dtype: pl.DataType) -> bool:
    """Whether a source column already holds dates or datetimes."""
    return isinstance(dtype, pl.Datetime) or dtype == pl.Date


def parse_date(text: str) -> datetime:
    """One ISO 8601 date or datetime (from the command line) as an aware UTC datetime."""
    moment = datetime.fromisoformat(text.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
