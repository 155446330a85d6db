"""Request and response models of the API, derived from the dataset spec.

The request model is built at start-up from the spec's columns, so a server for another churn
data set accepts that data set's fields without code changes. It is strict about JSON types: a
number in quotes, or a number or string for a boolean, is refused rather than converted. JSON
Schema's numbers are kept: an integer is valid for a decimal field, and a whole number written
with a fraction (24.0) for an integer field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from churn_mlops.data.spec import ColumnSpec, DatasetSpec, Kind

Risk = Literal["high", "medium", "low"]
EXAMPLE = {"tenure": 24, "monthly_charges": 65.5}


def customer_model(spec: DatasetSpec, *, unknown_category: Literal["error", "map"]) -> type[BaseModel]:
    """The model of one customer's fields by canonical name: strict JSON types, no extra fields."""
    fields: dict[str, Any] = {
        spec.id.name: (str | None, Field(None, max_length=200, description="Customer id"))
    }
    fields |= {column.name: _field(column, unknown_category) for column in spec.features}
    config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"examples": [example_customer(spec)]},
    )
    return create_model(f"{spec.name.title()}Customer", __config__=config, **fields)


def batch_of(customer: type[BaseModel], max_batch: int) -> Any:
    """The type of a batch request: a list of 1 to `max_batch` customers."""
    return Annotated[list[customer], Field(min_length=1, max_length=max_batch)]  # type: ignore[valid-type]


def _whole(value: Any) -> Any:
    """24.0 as 24, as JSON Schema counts it an integer; anything else as it came."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_whole)]


def _field(column: ColumnSpec, unknown_category: str) -> tuple[Any, Any]:
    annotation: Any
    constraints: dict[str, Any]
    if column.type is Kind.NUMERIC:
        annotation = WholeNumber if column.integer else float
        constraints = {"ge": column.min, "le": column.max}
    elif column.type is Kind.BOOLEAN:
        annotation, constraints = bool, {}
    else:
        annotation = Literal[column.categories] if unknown_category == "error" else str
        constraints = {} if unknown_category == "error" else {"max_length": 200}
    if column.nullable:
        return annotation | None, Field(None, description=column.description, **constraints)
    return annotation, Field(..., description=column.description, **constraints)


def example_customer(spec: DatasetSpec) -> dict[str, Any]:
    """A valid request body for the spec, for docs and the quick-start curl."""
    example: dict[str, Any] = {}
    for column in spec.features:
        if column.type is Kind.CATEGORICAL:
            example[column.name] = column.categories[0]
        elif column.type is Kind.BOOLEAN:
            example[column.name] = False
        else:
            value = EXAMPLE.get(column.name, column.min if column.min is not None else 0)
            example[column.name] = int(value) if column.integer else value
    return example


class Reason(BaseModel):
    """One feature's push on this customer's score, in the customer's terms."""

    feature: str
    value: Any
    contribution: float = Field(description="log-odds pushed up (+) or down (-) by this feature")


class PredictionPublic(BaseModel):
    """The answer for one customer."""

    churn_probability: float
    prediction: int
    risk: Risk
    model_version: str
    request_id: str
    customer_id: str | None = None
    reasons: list[Reason] | None = None


class BatchPublic(BaseModel):
    """The answers for a batch, in request order."""

    predictions: list[PredictionPublic]
    model_version: str
    request_id: str


class ModelPublic(BaseModel):
    """The model being served."""

    name: str
    version: str
    aliases: list[str]
    threshold: float
    metrics: dict[str, float]
    data_version: str | None
    loaded_at: str
    request_schema: dict[str, Any]


class FieldProblem(BaseModel):
    """One problem with a request: where it is, what is wrong, and the input that was sent."""

    field: str = Field(description="the field's path (`tenure`, `0.tenure` in a batch), or `body`")
    problem: str
    input: Any = Field(None, description="the value sent (cut to 100 characters); absent if none was")


class ProblemPublic(BaseModel):
    """Why a request was refused or could not be answered, in one line."""

    detail: str


class ValidationProblemPublic(ProblemPublic):
    """A request whose body or query is not valid: every problem, the first five in `detail`."""

    errors: list[FieldProblem]
