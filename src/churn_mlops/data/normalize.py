"""Raw source columns to canonical, typed columns, as the dataset spec says.

One vectorised pass: raw names are mapped to canonical ones, text is trimmed, blanks become
nulls, yes/no and 0/1 flags become booleans and numbers are parsed. A value that cannot be
converted becomes null and is reported as an issue for its row; nothing is raised per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from churn_mlops.data.spec import ColumnSpec, DatasetSpec, IdSpec, Kind
from churn_mlops.errors import DataValidationError

ROW = "_row"
_NO_PROBLEM = pl.lit(None, pl.String)
ISSUE_SCHEMA = {ROW: pl.Int64, "column": pl.String, "check": pl.String, "reason": pl.String}


@dataclass(frozen=True)
class Normalized:
    """Canonical typed columns (with the source row number in `_row`) and per-row issues."""

    frame: pl.DataFrame
    issues: pl.DataFrame
    ignored_columns: tuple[str, ...]


@dataclass(frozen=True)
class _Conversion:
    name: str
    value: pl.Expr
    problem: pl.Expr  # a "check:reason" string where the value could not be converted, else null


def resolve_columns(columns: list[str], spec: DatasetSpec, *, require_target: bool) -> dict[str, str]:
    """Map each canonical column to its name in the source; raise naming any that are missing."""
    wanted: list[IdSpec | ColumnSpec] = [spec.id, *spec.features]
    if require_target or any(n in columns for n in spec.target.source_names):
        wanted.append(spec.target)
    present = set(columns)
    found = {c.name: next((n for n in c.source_names if n in present), None) for c in wanted}
    missing = [c.source_names[0] for c in wanted if found[c.name] is None]
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        hint = " (data without labels: pass --unlabelled)" if found.get(spec.target.name, "") is None else ""
        seen = ", ".join(columns[:6]) + (", ..." if len(columns) > 6 else "")
        raise DataValidationError(f"missing required columns: {shown}; the data has: {seen}{hint}")
    return {name: source for name, source in found.items() if source is not None}


def normalize(raw: pl.DataFrame, spec: DatasetSpec, *, require_target: bool = True) -> Normalized:
    """Convert a raw frame to the spec's canonical columns, collecting conversion issues."""
    names = resolve_columns(raw.columns, spec, require_target=require_target)
    conversions = [_Conversion(spec.id.name, _text(names[spec.id.name]), _NO_PROBLEM)]
    conversions += [_feature(f, names[f.name], raw.schema[names[f.name]], spec) for f in spec.features]
    if spec.target.name in names:
        conversions.append(_target(spec, names[spec.target.name], raw.schema))
    converted = raw.select(
        (pl.int_range(1, pl.len() + 1, dtype=pl.Int64)).alias(ROW),
        *(c.value.alias(c.name) for c in conversions),
        *(c.problem.alias(f"_problem_{c.name}") for c in conversions),
    )
    problem_columns = [f"_problem_{c.name}" for c in conversions]
    issues = _collect_issues(converted, problem_columns)
    ignored = tuple(c for c in raw.columns if c not in set(names.values()))
    return Normalized(converted.drop(problem_columns), issues, ignored)


def _collect_issues(converted: pl.DataFrame, problem_columns: list[str]) -> pl.DataFrame:
    long = (
        converted.select(ROW, *problem_columns)
        .filter(pl.any_horizontal(pl.col(problem_columns).is_not_null()))
        .unpivot(index=ROW, on=problem_columns, variable_name="column", value_name="problem")
        .drop_nulls("problem")
    )
    parts = pl.col("problem").str.splitn(":", 2)
    return long.select(
        pl.col(ROW),
        pl.col("column").str.strip_prefix("_problem_"),
        parts.struct.field("field_0").alias("check"),
        parts.struct.field("field_1").alias("reason"),
    ).cast(ISSUE_SCHEMA)  # type: ignore[arg-type]


def _text(name: str) -> pl.Expr:
    """Trimmed text with blanks as nulls."""
    stripped = pl.col(name).cast(pl.String).str.strip_chars()
    return pl.when(stripped != "").then(stripped)


def _problem(condition: pl.Expr, check: str, message: str, raw: pl.Expr) -> pl.Expr:
    return pl.when(condition).then(pl.format(f"{check}:{message}: '{{}}'", raw))


def _feature(column: ColumnSpec, source: str, dtype: pl.DataType, spec: DatasetSpec) -> _Conversion:
    if column.type is Kind.NUMERIC:
        return _numeric(column, source, dtype)
    if column.type is Kind.BOOLEAN:
        mapping = {v.lower(): True for v in spec.boolean_values.true}
        mapping |= {v.lower(): False for v in spec.boolean_values.false}
        return _boolean(column.name, source, dtype, mapping, "not a yes/no value")
    return _Conversion(column.name, _text(source), _NO_PROBLEM)


def _target(spec: DatasetSpec, source: str, schema: pl.Schema) -> _Conversion:
    target = spec.target
    mapping = {v.lower(): True for v in spec.boolean_values.true}
    mapping |= {v.lower(): False for v in spec.boolean_values.false}
    mapping |= {target.positive.lower(): True, target.negative.lower(): False}
    message = f"not a label ({target.positive!r} or {target.negative!r})"
    return _boolean(target.name, source, schema[source], mapping, message)


def _numeric(column: ColumnSpec, source: str, dtype: pl.DataType) -> _Conversion:
    if dtype.is_numeric() or dtype == pl.Boolean:
        parsed = pl.col(source).cast(pl.Float64)
        unparsable = pl.lit(False)
    else:
        text = _text(source)
        parsed = text.cast(pl.Float64, strict=False)
        unparsable = text.is_not_null() & parsed.is_null()
    not_finite = parsed.is_nan() | parsed.is_infinite()
    fractional = pl.lit(False)
    if column.integer:
        fractional = parsed.is_not_null() & ~not_finite & (parsed != parsed.round(0))
    raw = pl.col(source).cast(pl.String)
    problem = pl.coalesce(
        _problem(unparsable, "not_a_number", "not a number", raw),
        _problem(not_finite, "not_finite", "not a finite number", raw),
        _problem(fractional, "not_whole", "not a whole number", raw),
    )
    value = pl.when(unparsable | not_finite | fractional).then(None).otherwise(parsed)
    return _Conversion(column.name, value.cast(pl.Int64 if column.integer else pl.Float64), problem)


def _boolean(
    name: str, source: str, dtype: pl.DataType, mapping: dict[str, bool], message: str
) -> _Conversion:
    if dtype == pl.Boolean:
        return _Conversion(name, pl.col(source), _NO_PROBLEM)
    if dtype.is_numeric():
        number = pl.col(source).cast(pl.Float64)
        value: pl.Expr = pl.when(number == 1).then(True).when(number == 0).then(False)
        present = number.is_not_null()
    else:
        text = _text(source)
        value = text.str.to_lowercase().replace_strict(mapping, default=None, return_dtype=pl.Boolean)
        present = text.is_not_null()
    problem = _problem(present & value.is_null(), "not_boolean", message, pl.col(source).cast(pl.String))
    return _Conversion(name, value, problem)
