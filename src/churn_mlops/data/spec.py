"""The dataset contract: one declarative description of a churn table.

Validation, features, the API request model and the docs are all derived from a DatasetSpec,
so a new churn data set is a new YAML file, not new code.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from churn_mlops.errors import SpecError, first_line

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")
DEFAULT_SPEC = "telco"


class Kind(StrEnum):
    """How a feature column is typed."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    """One feature column: its canonical name, the raw name in source data, type and domain."""

    name: Annotated[str, Field(pattern=SNAKE_CASE.pattern)]
    raw: str | None = None
    type: Kind
    description: str = ""
    nullable: bool = False
    categories: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    integer: bool = False

    @property
    def source_names(self) -> tuple[str, ...]:
        """Names this column may carry in source data, the raw name first."""
        return tuple(dict.fromkeys(n for n in (self.raw, self.name) if n))

    @model_validator(mode="after")
    def _check_domain(self) -> Self:
        if self.type is Kind.CATEGORICAL and not self.categories:
            raise ValueError(f"categorical column {self.name!r} needs a list of categories")
        if self.type is not Kind.CATEGORICAL and self.categories:
            raise ValueError(f"only categorical columns take categories ({self.name!r})")
        if self.type is not Kind.NUMERIC and (self.min is not None or self.max is not None):
            raise ValueError(f"only numeric columns take min/max ({self.name!r})")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name!r} has min > max")
        return self


class IdSpec(_Strict):
    """The customer id column."""

    name: Annotated[str, Field(pattern=SNAKE_CASE.pattern)]
    raw: str | None = None

    @property
    def source_names(self) -> tuple[str, ...]:
        """Names this column may carry in source data, the raw name first."""
        return tuple(dict.fromkeys(n for n in (self.raw, self.name) if n))


class TimeSpec(IdSpec):
    """A timestamp column: when a customer snapshot was taken, or when a label was observed."""


class TargetSpec(IdSpec):
    """The churn label: which raw value means churned, which means stayed."""

    positive: str = "Yes"
    negative: str = "No"
    min_rate: float = Field(0.005, ge=0, le=1)
    max_rate: float = Field(0.995, ge=0, le=1)


class BooleanValues(_Strict):
    """Raw spellings of true and false, compared case-insensitively."""

    true: tuple[str, ...] = ("yes", "y", "true", "t", "1")
    false: tuple[str, ...] = ("no", "n", "false", "f", "0")


class DerivedSpec(_Strict):
    """A feature computed from others: a ratio of two numeric columns, or a count of columns."""

    name: Annotated[str, Field(pattern=SNAKE_CASE.pattern)]
    type: Literal["ratio", "count"]
    description: str = ""
    numerator: str | None = None
    denominator: str | None = None
    min_denominator: float = 1.0
    columns: tuple[str, ...] = ()
    value: str = "Yes"

    @model_validator(mode="after")
    def _check_inputs(self) -> Self:
        if self.type == "ratio" and not (self.numerator and self.denominator):
            raise ValueError(f"ratio feature {self.name!r} needs a numerator and a denominator")
        if self.type == "count" and not self.columns:
            raise ValueError(f"count feature {self.name!r} needs columns")
        return self

    @property
    def inputs(self) -> tuple[str, ...]:
        """The columns this feature is computed from."""
        if self.type == "ratio":
            return (str(self.numerator), str(self.denominator))
        return self.columns


class DatasetSpec(_Strict):
    """A churn table, described once."""

    name: Annotated[str, Field(pattern=SNAKE_CASE.pattern)]
    description: str = ""
    id: IdSpec
    target: TargetSpec
    features: tuple[ColumnSpec, ...]
    event_time: TimeSpec | None = None
    label_time: TimeSpec | None = None
    derived: tuple[DerivedSpec, ...] = ()
    boolean_values: BooleanValues = BooleanValues()
    min_rows: int = Field(1, ge=1)
    max_quarantine_fraction: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _check_names(self) -> Self:
        names = [self.id.name, self.target.name, *(f.name for f in self.features), *self.time_columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"column names used twice: {', '.join(duplicates)}")
        if not self.features:
            raise ValueError("a spec needs at least one feature")
        if self.label_time is not None and self.event_time is None:
            raise ValueError("label_time needs an event_time: labels are placed among snapshots in time")
        known = {f.name: f for f in self.features}
        for derived in self.derived:
            if derived.name in names:
                raise ValueError(f"derived feature {derived.name!r} has the name of a column")
            absent = [c for c in derived.inputs if c not in known]
            if absent:
                raise ValueError(
                    f"derived feature {derived.name!r} uses unknown columns: {', '.join(absent)}"
                )
            if derived.type == "ratio" and any(known[c].type is not Kind.NUMERIC for c in derived.inputs):
                raise ValueError(f"ratio feature {derived.name!r} needs numeric columns")
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        """Canonical column names in table order: id, features, target."""
        return (self.id.name, *(f.name for f in self.features), self.target.name)

    @property
    def time_columns(self) -> tuple[str, ...]:
        """Canonical names of the optional timestamp columns: the snapshot time, the label time."""
        return tuple(t.name for t in (self.event_time, self.label_time) if t is not None)

    def feature(self, name: str) -> ColumnSpec:
        """The feature column called `name`."""
        for column in self.features:
            if column.name == name:
                return column
        raise KeyError(name)

    def digest(self) -> str:
        """A short content hash, recorded wherever data or models depend on this spec."""
        unset = {name for name in ("event_time", "label_time") if getattr(self, name) is None}
        text = self.model_dump_json(exclude=unset)  # a spec without timestamps keeps its digest
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_spec(text: str, origin: str = "<spec>") -> DatasetSpec:
    """Parse a spec from YAML text; errors name the origin and the offending field."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{origin}: not valid YAML ({first_line(exc)})") from exc
    if not isinstance(document, dict):
        raise SpecError(f"{origin}: a dataset spec must be a YAML mapping")
    try:
        return DatasetSpec.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "spec"
        raise SpecError(f"{origin}: {where}: {error['msg']}") from exc


def load_spec(path: Path | str | None = None) -> DatasetSpec:
    """Load a spec file, or the built-in default (the IBM Telco schema) when path is None."""
    if path is None:
        builtin = resources.files("churn_mlops.data.specs").joinpath(f"{DEFAULT_SPEC}.yaml")
        return parse_spec(builtin.read_text(), origin=f"built-in spec {DEFAULT_SPEC}")
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec ({exc.strerror})") from exc
    return parse_spec(text, origin=str(path))
