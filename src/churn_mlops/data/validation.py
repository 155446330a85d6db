"""Validation: split a raw table into valid rows and quarantined rows with reasons.

Row-level failures never stop a run; table-level failures (no rows, missing columns, duplicate
ids, or duplicate id and snapshot time in a table with history, a target rate out of bounds,
most rows failing) raise DataValidationError. Always:
rows in = valid + quarantined. A record the reader marked as malformed (see `csv_recovery.py`)
is quarantined with the reader's reason alone, under the column `_record`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandera
import pandera.errors
import pandera.polars
import polars as pl

from churn_mlops.data.csv_recovery import MALFORMED
from churn_mlops.data.normalize import ISSUE_SCHEMA, ROW, normalize
from churn_mlops.data.schema import pandera_schema
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import DataValidationError

QUARANTINE_COLUMNS = ("_columns", "_reasons")
RECORD = "_record"  # the issue column of a record that could not be read into fields


@dataclass(frozen=True)
class ValidationReport:
    """Counts of a validation run and what failed, by column and check."""

    spec: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    failures: list[dict[str, object]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    target_rate: float | None = None


@dataclass(frozen=True)
class ValidationResult:
    """Valid canonical rows, quarantined raw rows with `_row`, `_columns`, `_reasons`, a report."""

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    report: ValidationReport


def validate(raw: pl.DataFrame, spec: DatasetSpec, *, require_target: bool = True) -> ValidationResult:
    """Validate a raw frame against the spec; rows that break a rule are quarantined."""
    if raw.height == 0:
        raise DataValidationError("the table has no rows")
    raw, malformed = _malformed(raw)
    normalized = normalize(raw, spec, require_target=require_target)
    table = normalized.frame
    with_target = spec.target.name in table.columns
    issues = pl.concat([normalized.issues, _schema_issues(table, spec, with_target, normalized.known)])
    read = table
    if malformed.height:  # a marked record's fields are a guess: only the reader's reason counts
        unread = pl.col(ROW).is_in(malformed.get_column(ROW).implode())
        issues, read = pl.concat([malformed, issues.filter(~unread)]), table.filter(~unread)
    issues = issues.unique(subset=[ROW, "column"], keep="first", maintain_order=True)
    _check_unique_ids(read, snapshot_key(spec, read.columns))
    bad = _bad_rows(issues)
    valid = (
        table.drop(ROW)
        if bad.height == 0
        else table.filter(~pl.col(ROW).is_in(bad.get_column(ROW).implode())).drop(ROW)
    )
    quarantine = _quarantine(raw, bad)
    report = ValidationReport(
        spec=spec.name,
        rows_in=raw.height,
        rows_valid=valid.height,
        rows_quarantined=quarantine.height,
        failures=_failure_counts(issues),
        ignored_columns=list(normalized.ignored_columns),
        target_rate=_target_rate(valid, spec) if with_target else None,
    )
    _check_table(report, spec)
    return ValidationResult(valid, quarantine, report)


def _malformed(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The raw frame without the reader's `_malformed` column, and an issue per marked record."""
    if MALFORMED not in raw.columns:
        return raw, pl.DataFrame(schema=ISSUE_SCHEMA)
    marked = raw.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW),
        pl.lit(RECORD).alias("column"),
        pl.lit("malformed").alias("check"),
        pl.col(MALFORMED).alias("reason"),
    ).drop_nulls("reason")
    return raw.drop(MALFORMED), marked


def _bad_rows(issues: pl.DataFrame) -> pl.DataFrame:
    """One row per row number with issues: its columns and reasons, each joined with "; "."""
    if issues.height == 0:
        return pl.DataFrame(schema={ROW: pl.Int64, "_columns": pl.String, "_reasons": pl.String})
    return issues.group_by(ROW, maintain_order=True).agg(
        pl.col("column").str.join("; ").alias("_columns"),
        pl.col("reason").str.join("; ").alias("_reasons"),
    )


def _schema_issues(
    table: pl.DataFrame, spec: DatasetSpec, with_target: bool, known: frozenset[str]
) -> pl.DataFrame:
    times = tuple(name for name in spec.time_columns if name in table.columns)
    schema = _pandera_schema(spec, with_target, times)
    if _all_rows_pass(table, _one_pass(spec, with_target, times, tuple(table.schema.items()), known)):
        return pl.DataFrame(schema=ISSUE_SCHEMA)
    try:
        schema.validate(table, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        return _translate(exc.failure_cases, table, spec)
    return pl.DataFrame(schema=ISSUE_SCHEMA)


@lru_cache(maxsize=16)
def _pandera_schema(
    spec: DatasetSpec, with_target: bool, times: tuple[str, ...]
) -> pandera.polars.DataFrameSchema:
    """The spec's pandera schema, built once per spec (and columns) rather than once per batch."""
    return pandera_schema(spec, with_target=with_target, times=times)


@lru_cache(maxsize=16)
def _one_pass(
    spec: DatasetSpec,
    with_target: bool,
    times: tuple[str, ...],
    dtypes: tuple[tuple[str, pl.DataType], ...],
    known: frozenset[str],
) -> tuple[pl.Expr, ...] | None:
    """One query over a table of these column types: whether any row breaks each rule of the
    schema; None where a rule is beyond it. The category lookup of a `known` column is left out:
    normalize saw its values, and all are categories."""
    schema = _pandera_schema(spec, with_target, times)
    if schema.checks or schema.unique or schema.coerce or schema.strict:
        return None
    columns = dict(dtypes)
    failures: list[pl.Expr] = []
    for name, column in schema.columns.items():
        failed = _column_failures(columns, name, column, known)
        if failed is None:
            return None
        failures += failed
    return tuple(f.alias(str(i)) for i, f in enumerate(failures))


def _all_rows_pass(table: pl.DataFrame, failures: tuple[pl.Expr, ...] | None) -> bool:
    """Whether pandera would find nothing, decided in one pass over the table; any doubt says no.

    Pandera runs each check as its own query; on a clean batch, one query over all the checks
    is several times cheaper. A rule this pass does not know, and any NaN, leave it to pandera.
    """
    return failures is not None and (not failures or not any(table.select(failures).row(0)))


def _column_failures(
    dtypes: dict[str, pl.DataType], name: str, column: pandera.polars.Column, known: frozenset[str]
) -> list[pl.Expr] | None:
    """Whether any row breaks each of a column's rules; None if the column is beyond this pass."""
    if name not in dtypes or dtypes[name] != column.dtype.type:
        return None
    if column.unique or column.coerce or column.regex or not column.required:
        return None
    value = pl.col(name)
    failures = [] if column.nullable else [value.is_null().any()]
    if dtypes[name].is_float():
        failures.append(value.is_nan().any())
    for check in column.checks:
        if name in known and check.name == "isin":
            continue
        passed = _check_passes(value, check)
        if passed is None or not check.ignore_na:
            return None
        failures.append((~passed.fill_null(True)).any())
    return failures


def _check_passes(value: pl.Expr, check: pandera.Check) -> pl.Expr | None:
    """A built-in check as pandera's polars backend evaluates it (null where the value is null)."""
    stats: dict[str, Any] = check.statistics or {}
    passed: pl.Expr | None = None
    if check.name == "isin":  # on the distinct values: fewer lookups, the same verdict
        passed = value.unique().is_in(list(stats["allowed_values"]))
    elif check.name == "in_range":
        low = value >= stats["min_value"] if stats["include_min"] else value > stats["min_value"]
        high = value <= stats["max_value"] if stats["include_max"] else value < stats["max_value"]
        passed = low & high
    elif check.name == "greater_than_or_equal_to":
        passed = value >= stats["min_value"]
    elif check.name == "less_than_or_equal_to":
        passed = value <= stats["max_value"]
    return passed


def _translate(failures: pl.DataFrame, table: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Pandera failure cases to issues in the user's terms, keyed by source row number."""
    rows = failures.filter(pl.col("index").is_not_null())
    unexpected = failures.filter(pl.col("index").is_null())
    if unexpected.height:
        first = unexpected.row(0, named=True)
        raise DataValidationError(f"column {first['column']}: {first['check']} ({first['failure_case']})")
    check = pl.col("check")
    kind = (
        pl.when(check == "not_nullable")
        .then(pl.lit("missing"))
        .when(check.str.starts_with("isin"))
        .then(pl.lit("unknown_category"))
        .otherwise(pl.lit("out_of_range"))
    )
    reason = (
        pl.when(check == "not_nullable")
        .then(pl.lit("missing value"))
        .when(check.str.starts_with("isin"))
        .then(pl.format("unknown category '{}'", "failure_case"))
        .otherwise(pl.format("out of range {}: {}", "bounds", "failure_case"))
    )
    bounds = {f.name: _bounds(f.min, f.max) for f in spec.features if f.min is not None or f.max is not None}
    rows = rows.with_columns(bounds=pl.col("column").replace_strict(bounds, default=""))
    row_numbers = table.get_column(ROW).gather(rows.get_column("index"))
    return rows.select(
        row_numbers.alias(ROW), pl.col("column"), kind.alias("check"), reason.alias("reason")
    ).cast(ISSUE_SCHEMA)  # type: ignore[arg-type]


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"[{low:g}, {high:g}]"
    return f">= {low:g}" if low is not None else f"<= {high:g}"


def snapshot_key(spec: DatasetSpec, columns: list[str]) -> list[str]:
    """What identifies a row: the customer id, and the snapshot time where the data has one."""
    event_time = spec.event_time.name if spec.event_time is not None else None
    return [spec.id.name, *([event_time] if event_time in columns else [])]


def _check_unique_ids(table: pl.DataFrame, key: list[str]) -> None:
    """Raise if a non-null key appears more than once; the details are gathered only then."""
    if len(key) == 1:
        ids = table.get_column(key[0])
        nulls = ids.null_count()
        unique = ids.n_unique() - (nulls > 0) == ids.len() - nulls  # n_unique counts null as a value
    else:
        keys = table.select(key).drop_nulls()
        unique = keys.height == keys.n_unique()
    if not unique:
        raise _duplicate_ids(table, key)


def _duplicate_ids(table: pl.DataFrame, key: list[str]) -> DataValidationError:
    ids = table.select(ROW, *key).drop_nulls(key)
    repeated = ids.filter(pl.struct(key).is_duplicated())
    example = repeated.row(0, named=True)
    first = repeated.filter(pl.all_horizontal(pl.col(k) == example[k] for k in key))
    rows = ", ".join(str(r) for r in first.get_column(ROW).head(3))
    count = repeated.select(key).n_unique()
    noun = "ids" if len(key) == 1 else "snapshots (id and time)"
    shown = " at ".join(repr(str(example[k])) for k in key)
    return DataValidationError(
        f"duplicate {' and '.join(key)}: {count} {noun} appear more than once (e.g. {shown} at rows {rows})"
    )


def _quarantine(raw: pl.DataFrame, bad: pl.DataFrame) -> pl.DataFrame:
    """The bad raw rows, every value as text, with their row numbers and reasons."""
    if bad.height == 0 and ROW not in raw.columns:  # nothing to pick: only the columns
        text = {name: pl.String for name in raw.columns}
        return pl.DataFrame(schema={ROW: pl.Int64, **text, "_columns": pl.String, "_reasons": pl.String})
    numbered = raw.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
    picked = numbered.filter(pl.col(ROW).is_in(bad.get_column(ROW).implode()))
    return picked.with_columns(pl.exclude(ROW).cast(pl.String)).join(bad, on=ROW, maintain_order="left")


def _failure_counts(issues: pl.DataFrame) -> list[dict[str, object]]:
    if issues.height == 0:
        return []
    counts = issues.group_by("column", "check").agg(
        pl.len().alias("rows"), pl.col("reason").first().alias("example")
    )
    return counts.sort("rows", "column", "check", descending=[True, False, False]).to_dicts()


def _target_rate(valid: pl.DataFrame, spec: DatasetSpec) -> float | None:
    if valid.height == 0:
        return None
    return float(valid.get_column(spec.target.name).mean())  # type: ignore[arg-type]


def _check_table(report: ValidationReport, spec: DatasetSpec) -> None:
    if report.rows_quarantined > spec.max_quarantine_fraction * report.rows_in:
        top = report.failures[0]
        raise DataValidationError(
            f"{report.rows_quarantined} of {report.rows_in} rows failed validation; the spec "
            f"{spec.name!r} does not seem to match this data (most common: column "
            f"{top['column']}, {top['example']})"
        )
    if report.rows_valid < spec.min_rows:
        raise DataValidationError(f"only {report.rows_valid} valid rows; the spec needs {spec.min_rows}")
    rate, target = report.target_rate, spec.target
    if rate is not None and not target.min_rate <= rate <= target.max_rate:
        raise DataValidationError(
            f"target rate {rate:.3f} of column {target.name} is outside "
            f"[{target.min_rate}, {target.max_rate}]: wrong positive label or wrong data?"
        )
