"""Raw source columns to canonical, typed columns, as the dataset spec says.

Vectorised, in phases that each compute a column once: raw names are mapped to canonical ones,
text is trimmed and blanks become nulls, then yes/no and 0/1 flags become booleans and numbers
are parsed (timestamps too, where the spec names them and the source has them), then every
check gives a boolean mask. A value that cannot be converted becomes null and is reported as
an issue for its row; messages are written only for the flagged rows.
A text column whose distinct values are all known, already-trimmed categories or yes/no
spellings skips trimming (and lower-casing): same result, less work; such a category column is
reported as known, so that validation need not look up its values again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import polars as pl

from churn_mlops.data.spec import ColumnSpec, DatasetSpec, IdSpec, Kind
from churn_mlops.data.timestamps import TIMESTAMP, from_temporal, is_temporal, parse_text
from churn_mlops.errors import DataValidationError

ROW = "_row"
ISSUE_SCHEMA = {ROW: pl.Int64, "column": pl.String, "check": pl.String, "reason": pl.String}
_INPUT = "_input_"  # prefix of a column's trimmed (or typed) source value
_FAILED = "_failed_"  # prefix of a check's boolean mask
_PROBLEM = "_problem_"  # prefix of a column's "check:reason" text, built for flagged rows only
_GUESS_ROWS = 1024  # rows whose distinct values are taken as a guess at a whole column's


@dataclass(frozen=True)
class Normalized:
    """Canonical typed columns (with the source row number in `_row`) and per-row issues."""

    frame: pl.DataFrame
    issues: pl.DataFrame
    ignored_columns: tuple[str, ...]
    known: frozenset[str] = frozenset()  # category columns whose values are all among the categories


@dataclass(frozen=True)
class _Check:
    """A rule a converted value must meet, and the reason given when it does not."""

    name: str
    message: str
    failed: pl.Expr  # over the input `_input_<column>` and the parsed `<column>`; true where it fails


@dataclass(frozen=True)
class _Conversion:
    """How one canonical column is made from its source column, as expressions per phase."""

    name: str
    source: str
    input: pl.Expr  # the source column, trimmed text where it is parsed from text
    parsed: pl.Expr  # over the input column
    checks: tuple[_Check, ...] = ()
    dtype: pl.DataType | None = None  # the final type where parsing gives another one
    clean: frozenset[str] = frozenset()  # trimmed, non-blank values: a source of only these needs no trimming
    truth: Mapping[str, bool] | None = None  # for a yes/no column, what each clean value means
    known: bool = False  # a category column whose source holds only clean categories (and nulls)

    def mask(self, check: _Check) -> str:
        """The name of a check's mask column."""
        return f"{_FAILED}{self.name}_{check.name}"

    def for_clean_source(self, present: list[str]) -> _Conversion:
        """The same conversion for a source holding only the clean values `present` (and nulls)."""
        parsed = self.parsed
        if self.truth is not None:
            given = pl.col(_INPUT + self.name)
            is_true = [given == v for v in present if self.truth[v]]
            parsed = pl.when(given.is_not_null()).then(pl.any_horizontal(is_true) if is_true else False)
        return replace(self, input=pl.col(self.source), parsed=parsed, known=self.truth is None)


def resolve_columns(columns: list[str], spec: DatasetSpec, *, require_target: bool) -> dict[str, str]:
    """Map each canonical column to its name in the source; raise naming any that are missing."""
    wanted: list[IdSpec | ColumnSpec] = [spec.id, *spec.features]
    if require_target or any(n in columns for n in spec.target.source_names):
        wanted.append(spec.target)
    present = set(columns)
    found = {c.name: next((n for n in c.source_names if n in present), None) for c in wanted}
    missing = [c.source_names[0] for c in wanted if found[c.name] is None]
    found |= _time_columns(present, spec)
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        hint = " (data without labels: pass --unlabelled)" if found.get(spec.target.name, "") is None else ""
        seen = ", ".join(columns[:6]) + (", ..." if len(columns) > 6 else "")
        raise DataValidationError(f"missing required columns: {shown}; the data has: {seen}{hint}")
    return {name: source for name, source in found.items() if source is not None}


def _time_columns(present: set[str], spec: DatasetSpec) -> dict[str, str]:
    """The optional timestamp columns the source has: a table with them holds snapshots over time."""
    times = [t for t in (spec.event_time, spec.label_time) if t is not None]
    found = {t.name: next((n for n in t.source_names if n in present), None) for t in times}
    return {name: source for name, source in found.items() if source is not None}


def normalize(raw: pl.DataFrame, spec: DatasetSpec, *, require_target: bool = True) -> Normalized:
    """Convert a raw frame to the spec's canonical columns, collecting conversion issues."""
    names = resolve_columns(raw.columns, spec, require_target=require_target)
    conversions = _skip_trimming_clean_sources(raw, _conversions(spec, names, raw.schema))
    work = raw.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW),
        *(c.input.alias(_INPUT + c.name) for c in conversions),
    )
    work = work.with_columns(c.parsed.alias(c.name) for c in conversions)
    work = work.with_columns(
        check.failed.fill_null(False).alias(c.mask(check)) for c, check in _checks(conversions)
    )
    frame = work.select(ROW, *(_value(c).alias(c.name) for c in conversions))
    ignored = tuple(c for c in raw.columns if c not in set(names.values()))
    known = frozenset(c.name for c in conversions if c.known)
    return Normalized(frame, _issues(raw, work, conversions), ignored, known)


def _conversions(spec: DatasetSpec, names: dict[str, str], schema: pl.Schema) -> list[_Conversion]:
    source = names[spec.id.name]
    conversions = [_Conversion(spec.id.name, source, _text(source), pl.col(_INPUT + spec.id.name))]
    if spec.event_time is not None and spec.event_time.name in names:
        conversions.append(_timestamp(spec.event_time.name, names[spec.event_time.name], schema))
    conversions += [_feature(f, names[f.name], schema[names[f.name]], spec) for f in spec.features]
    if spec.target.name in names:
        conversions.append(_target(spec, names[spec.target.name], schema))
    if spec.label_time is not None and spec.label_time.name in names:
        conversions.append(_timestamp(spec.label_time.name, names[spec.label_time.name], schema))
    return conversions


def _checks(conversions: list[_Conversion]) -> list[tuple[_Conversion, _Check]]:
    return [(c, check) for c in conversions for check in c.checks]


def _skip_trimming_clean_sources(raw: pl.DataFrame, conversions: list[_Conversion]) -> list[_Conversion]:
    """Use the cheap path for columns whose values are all already clean: no trimming, no lower-casing."""
    candidates = [c for c in conversions if c.clean]
    if not candidates:
        return conversions
    present = _clean_values(raw, candidates)
    return [c.for_clean_source(present[c.name]) if c.name in present else c for c in conversions]


def _clean_values(raw: pl.DataFrame, candidates: list[_Conversion]) -> dict[str, list[str]]:
    """The distinct non-null values of each candidate column whose values are all clean.

    The first rows' distinct values are a guess, confirmed over all rows by comparing with them
    (cheaper than hashing every value); a column they do not cover is looked at in full.
    """
    guesses = _distinct_clean(raw.head(_GUESS_ROWS), candidates)
    if raw.height <= _GUESS_ROWS:
        return {name: values for name, values in guesses.items() if values is not None}
    guessed = {c.name: (c.source, values) for c in candidates if (values := guesses[c.name])}
    confirmed = _all_among(raw, guessed) if guessed else {}
    rest = [c for c in candidates if guesses[c.name] is not None and not confirmed.get(c.name)]
    found = {name: guesses[name] for name, ok in confirmed.items() if ok}
    found |= _distinct_clean(raw, rest) if rest else {}
    return {name: values for name, values in found.items() if values is not None}


def _all_among(raw: pl.DataFrame, guessed: dict[str, tuple[str, list[str]]]) -> dict[str, bool]:
    """Whether every non-null value of each source column is one of the values guessed for it."""
    return raw.select(
        pl.any_horizontal(pl.col(source) == v for v in values).all().alias(name)
        for name, (source, values) in guessed.items()
    ).row(0, named=True)


def _distinct_clean(frame: pl.DataFrame, candidates: list[_Conversion]) -> dict[str, list[str] | None]:
    """Each candidate column's distinct non-null values where all are clean, else None."""
    distinct = frame.select(  # a clean source has at most len(clean) + 1 distinct values, null included
        pl.col(c.source).unique().head(len(c.clean) + 2).implode().alias(c.name) for c in candidates
    ).row(0, named=True)
    present = {c.name: [v for v in distinct[c.name] if v is not None] for c in candidates}
    return {
        c.name: present[c.name]
        if len(distinct[c.name]) <= len(c.clean) + 1 and c.clean.issuperset(present[c.name])
        else None
        for c in candidates
    }


def _value(conversion: _Conversion) -> pl.Expr:
    """The parsed value, null where a check failed, in its final type."""
    value = pl.col(conversion.name)
    if conversion.checks:
        failed = pl.any_horizontal(pl.col(conversion.mask(check)) for check in conversion.checks)
        value = pl.when(failed).then(None).otherwise(value)
    return value.cast(conversion.dtype) if conversion.dtype is not None else value


def _issues(raw: pl.DataFrame, work: pl.DataFrame, conversions: list[_Conversion]) -> pl.DataFrame:
    """One issue per failed check, with messages quoting the raw value, for flagged rows only."""
    masks = [c.mask(check) for c, check in _checks(conversions)]
    if not masks:
        return pl.DataFrame(schema=ISSUE_SCHEMA)
    flagged = work.select(ROW, *masks).filter(pl.any_horizontal(masks))
    if flagged.height == 0:
        return pl.DataFrame(schema=ISSUE_SCHEMA)
    problems = [c for c in conversions if c.checks]
    sources = sorted({c.source for c in problems})
    values = raw.select(sources).gather(flagged.get_column(ROW) - 1).select(pl.all().cast(pl.String))
    quoted = flagged.hstack(values.rename(lambda s: "_raw_" + s).get_columns())
    described = quoted.select(ROW, *(_problem(c).alias(_PROBLEM + c.name) for c in problems))
    return _collect_issues(described, [_PROBLEM + c.name for c in problems])


def _problem(conversion: _Conversion) -> pl.Expr:
    """The first failed check of a column as "check:reason: 'raw value'", else null."""
    raw = pl.col("_raw_" + conversion.source)
    return pl.coalesce(
        pl.when(pl.col(conversion.mask(check))).then(pl.format(f"{check.name}:{check.message}: '{{}}'", raw))
        for check in conversion.checks
    )


def _collect_issues(described: pl.DataFrame, problem_columns: list[str]) -> pl.DataFrame:
    long = described.unpivot(index=ROW, on=problem_columns, variable_name="column", value_name="problem")
    parts = pl.col("problem").str.splitn(":", 2)
    return (
        long.drop_nulls("problem")
        .select(
            pl.col(ROW),
            pl.col("column").str.strip_prefix(_PROBLEM),
            parts.struct.field("field_0").alias("check"),
            parts.struct.field("field_1").alias("reason"),
        )
        .cast(ISSUE_SCHEMA)  # type: ignore[arg-type]
    )


def _text(source: str) -> pl.Expr:
    """Trimmed text with blanks as nulls."""
    return pl.col(source).cast(pl.String).str.strip_chars().replace("", None)


def _feature(column: ColumnSpec, source: str, dtype: pl.DataType, spec: DatasetSpec) -> _Conversion:
    if column.type is Kind.NUMERIC:
        return _numeric(column, source, dtype)
    if column.type is Kind.BOOLEAN:
        mapping = {v.lower(): True for v in spec.boolean_values.true}
        mapping |= {v.lower(): False for v in spec.boolean_values.false}
        return _boolean(column.name, source, dtype, mapping, "not a yes/no value")
    clean = frozenset(v for v in column.categories if _is_clean(v)) if dtype == pl.String else frozenset()
    return _Conversion(column.name, source, _text(source), pl.col(_INPUT + column.name), clean=clean)


def _target(spec: DatasetSpec, source: str, schema: pl.Schema) -> _Conversion:
    target = spec.target
    mapping = {v.lower(): True for v in spec.boolean_values.true}
    mapping |= {v.lower(): False for v in spec.boolean_values.false}
    mapping |= {target.positive.lower(): True, target.negative.lower(): False}
    message = f"not a label ({target.positive!r} or {target.negative!r})"
    return _boolean(target.name, source, schema[source], mapping, message)


def _numeric(column: ColumnSpec, source: str, dtype: pl.DataType) -> _Conversion:
    parsed, given = pl.col(column.name), pl.col(_INPUT + column.name)
    checks = [_Check("not_finite", "not a finite number", parsed.is_not_null() & ~parsed.is_finite())]
    if column.integer:
        checks.append(
            _Check("not_whole", "not a whole number", parsed.is_finite() & (parsed != parsed.round(0)))
        )
    final = pl.Int64 if column.integer else pl.Float64
    if dtype.is_numeric() or dtype == pl.Boolean:
        return _Conversion(
            column.name, source, pl.col(source), given.cast(pl.Float64), tuple(checks), final()
        )
    unparsable = _Check("not_a_number", "not a number", given.is_not_null() & parsed.is_null())
    number = given.cast(pl.Float64, strict=False)
    return _Conversion(column.name, source, _text(source), number, (unparsable, *checks), final())


def _timestamp(name: str, source: str, schema: pl.Schema) -> _Conversion:
    given, dtype = pl.col(_INPUT + name), schema[source]
    if is_temporal(dtype):
        return _Conversion(name, source, pl.col(source), from_temporal(given, dtype))
    check = _Check(
        "not_a_timestamp", "not an ISO 8601 timestamp", given.is_not_null() & pl.col(name).is_null()
    )
    return _Conversion(name, source, _text(source), parse_text(given), (check,), TIMESTAMP)


def _boolean(
    name: str, source: str, dtype: pl.DataType, mapping: dict[str, bool], message: str
) -> _Conversion:
    given = pl.col(_INPUT + name)
    if dtype == pl.Boolean:
        return _Conversion(name, source, pl.col(source), given)
    if dtype.is_numeric():
        number = given.cast(pl.Float64)
        value: pl.Expr = pl.when(number == 1).then(True).when(number == 0).then(False)
        return _Conversion(name, source, pl.col(source), value, (_not_boolean(name, message),))
    value = given.str.to_lowercase().replace_strict(mapping, default=None, return_dtype=pl.Boolean)
    spellings = _spellings(mapping) if dtype == pl.String else {}
    checks = (_not_boolean(name, message),)
    return _Conversion(
        name, source, _text(source), value, checks, clean=frozenset(spellings), truth=spellings
    )


def _spellings(mapping: dict[str, bool]) -> dict[str, bool]:
    """Common exact spellings of the (lower-case) keys, each meaning what its key means."""
    keys = [k for k in mapping if k.isascii() and _is_clean(k)]  # ASCII: polars lower-cases them the same
    return {s: mapping[k] for k in keys for s in (k, k.upper(), k.capitalize(), k.title())}


def _is_clean(value: str) -> bool:
    """Non-blank and trimmed (Python strips every character polars strips, and a few more)."""
    return value != "" and value == value.strip()


def _not_boolean(name: str, message: str) -> _Check:
    return _Check("not_boolean", message, pl.col(_INPUT + name).is_not_null() & pl.col(name).is_null())
