"""The fitted feature spec: vocabularies, fill values and derived features, saved as JSON.

It is fitted on training rows only and is all a scorer needs besides the model, so training,
the API and batch jobs turn the same record into the same row of numbers.
"""

from __future__ import annotations

from typing import Self

import polars as pl
from pydantic import BaseModel, ConfigDict

from churn_mlops.data.spec import DatasetSpec, DerivedSpec, Kind
from churn_mlops.errors import ConfigError


class NumericFeature(BaseModel):
    """A numeric or boolean input column and the value that fills its gaps."""

    model_config = ConfigDict(frozen=True)

    name: str
    fill: float
    boolean: bool = False


class CategoricalFeature(BaseModel):
    """A categorical input column and the categories seen in training, in code order."""

    model_config = ConfigDict(frozen=True)

    name: str
    vocabulary: tuple[str, ...]


class FeatureSpec(BaseModel):
    """Everything needed to turn raw canonical columns into the model's matrix."""

    model_config = ConfigDict(frozen=True)

    format_version: int = 1
    dataset: str
    spec_digest: str
    id_column: str
    target: str
    numeric: tuple[NumericFeature, ...]
    categorical: tuple[CategoricalFeature, ...]
    derived: tuple[DerivedSpec, ...]

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The canonical columns a record must carry."""
        return tuple(f.name for f in self.numeric) + tuple(f.name for f in self.categorical)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Matrix columns in order: numeric and boolean, categorical codes, derived."""
        return self.input_columns + tuple(d.name for d in self.derived)

    @property
    def categorical_indices(self) -> tuple[int, ...]:
        """Positions of the categorical code columns in the matrix."""
        start = len(self.numeric)
        return tuple(range(start, start + len(self.categorical)))

    def to_json(self) -> str:
        """The spec as JSON text."""
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> Self:
        """A spec from JSON text written by to_json."""
        return cls.model_validate_json(text)


def fit_features(train: pl.DataFrame, spec: DatasetSpec) -> FeatureSpec:
    """Learn fill values and vocabularies from training rows (canonical, validated columns)."""
    if train.height == 0:
        raise ConfigError("cannot fit features on zero rows")
    numeric, categorical = [], []
    for column in spec.features:
        values = train.get_column(column.name)
        if column.type is Kind.CATEGORICAL:
            seen = set(values.drop_nulls().unique().to_list())
            vocabulary = tuple(c for c in column.categories if c in seen)
            categorical.append(CategoricalFeature(name=column.name, vocabulary=vocabulary))
        else:
            boolean = column.type is Kind.BOOLEAN
            numeric.append(NumericFeature(name=column.name, fill=_fill(values, boolean), boolean=boolean))
    return FeatureSpec(
        dataset=spec.name,
        spec_digest=spec.digest(),
        id_column=spec.id.name,
        target=spec.target.name,
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        derived=spec.derived,
    )


def _fill(values: pl.Series, boolean: bool) -> float:
    """The median of a numeric column, the most common value of a boolean one; 0 if all null."""
    present = values.drop_nulls().cast(pl.Float64)
    if present.len() == 0:
        return 0.0
    if boolean:
        return float(present.mean() >= 0.5)  # type: ignore[operator]
    return float(present.median())  # type: ignore[arg-type]
