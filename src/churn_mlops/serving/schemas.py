"""Request and response models of the API, derived from the dataset spec.

The request model is built at start-up from the spec's columns, so a server for another churn
data set accepts that data set's fields without code changes. It is strict about JSON types: a
number in quotes, or a number or string for a boolean, is refused rather than converted. JSON
Schema's numbers are kept: an integer is valid for a decimal field, and a whole number written
with a fraction (24.0) for an integer field.

With an online feature store, `request_model` also takes a customer by id, with any of its
fields or none: its schema documents both shapes, and the prediction route fills in the rest.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, GetJsonSchemaHandler, create_model
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from churn_mlops.data.spec import ColumnSpec, DatasetSpec, Kind

Risk = Literal["high", "medium", "low"]
EXAMPLE = {"tenure": 24, "monthly_charges": 65.5}
BY_ID = (
    "With the online feature store configured, a customer may be sent by id: `{id}` alone, or with "
    "some fields. The fields not sent are read from the store, and those sent override them."
)


def customer_model(spec: DatasetSpec, *, unknown_category: Literal["error", "map"]) -> type[BaseModel]:
    """The model of one customer's fields by canonical name: strict JSON types, no extra fields."""
    fields: dict[str, Any] = {spec.id.name: (str | None, _id_field())}
    fields |= {column.name: _field(column, unknown_category) for column in spec.features}
    return create_model(f"{spec.name.title()}Customer", __config__=_config(spec), **fields)


def request_model(
    spec: DatasetSpec, *, unknown_category: Literal["error", "map"], by_id: bool
) -> type[BaseModel]:
    """The model of one customer in a request: the full customer, or with `by_id` also an id
    with some fields (documented as either of the two; missing fields are left to the route)."""
    full = customer_model(spec, unknown_category=unknown_category)
    if not by_id:
        return full
    optional = {column.name: _field(column, unknown_category, optional=True) for column in spec.features}
    fields: dict[str, Any] = {spec.id.name: (str, _id_field(required=True)), **optional}
    by_id_only = create_model(
        f"{spec.name.title()}CustomerById", __config__=_config(spec, {spec.id.name: "customer-1"}), **fields
    )

    class Either(BaseModel):
        model_config = _config(spec)

        @classmethod
        def __get_pydantic_json_schema__(
            cls, core: CoreSchema, handler: GetJsonSchemaHandler
        ) -> JsonSchemaValue:
            both = [handler(model.__pydantic_core_schema__) for model in (full, by_id_only)]
            return {"anyOf": both, "description": BY_ID.format(id=spec.id.name)}

    fields = {spec.id.name: (str | None, _id_field()), **optional}
    return create_model(f"{spec.name.title()}CustomerRequest", __base__=Either, **fields)


def _config(spec: DatasetSpec, example: dict[str, Any] | None = None) -> ConfigDict:
    return ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"examples": [example or example_customer(spec)]},
    )


def _id_field(*, required: bool = False) -> Any:
    if required:
        return Field(
            ..., max_length=200, description="Customer id: its fields are read from the online store"
        )
    return Field(None, max_length=200, description="Customer id")


def _no_default(schema: dict[str, Any]) -> None:
    """A field left out is looked up, not given a default: the schema shows none."""
    schema.pop("default", None)


def batch_of(customer: type[BaseModel], max_batch: int) -> Any:
    """The type of a batch request: a list of 1 to `max_batch` customers."""
    return Annotated[list[customer], Field(min_length=1, max_length=max_batch)]  # type: ignore[valid-type]


def _whole(value: Any) -> Any:
    """24.0 as 24, as JSON Schema counts it an integer; anything else as it came."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_whole)]


def _field(column: ColumnSpec, unknown_category: str, *, optional: bool = False) -> tuple[Any, Any]:
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
        annotation = annotation | None
    if column.nullable or optional:  # the default of a non-nullable field is never validated: null is refused
        return annotation, Field(
            None,
            description=column.description,
            json_schema_extra=_no_default if optional else None,
            **constraints,
        )
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


class FeaturesPublic(BaseModel):
    """Where a customer's features came from when they were looked up by id."""

    as_of: str = Field(description="when the stored features were observed (ISO 8601, UTC)")
    age_days: float = Field(description="their age when this answer was given")
    stale: bool = Field(
        description="older than `feature_store.ttl_days` (answered only when `stale` is flag)"
    )


class PredictionPublic(BaseModel):
    """The answer for one customer."""

    churn_probability: float
    prediction: int
    risk: Risk
    model_version: str
    request_id: str
    customer_id: str | None = None
    features: FeaturesPublic | None = Field(
        None, description="present when the customer's features were read from the online store"
    )
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


class CustomersProblemPublic(ProblemPublic):
    """A request refused for some customers sent by id: unknown, or with stale features."""

    customer_ids: list[str] = Field(description="the customers concerned, in request order")


class ValidationProblemPublic(ProblemPublic):
    """A request whose body or query is not valid: every problem, the first five in `detail`."""

    errors: list[FieldProblem]
