"""The API's request model, derived from the dataset spec: what it accepts and what it refuses."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from churn_mlops.data.spec import DatasetSpec, Kind, parse_spec
from churn_mlops.serving.schemas import batch_of, customer_model, example_customer, request_model

BANK = """
name: bank
id: {name: client_id, raw: ClientNo}
target: {name: exited, raw: Exited, positive: "1", negative: "0"}
features:
  - {name: age, raw: Age, type: numeric, integer: true, min: 18, max: 100}
  - {name: balance, raw: Balance, type: numeric, min: 0, nullable: true}
  - {name: country, raw: Geography, type: categorical, categories: [France, Spain], nullable: true}
  - {name: active, raw: IsActiveMember, type: boolean}
"""


@pytest.fixture(scope="module", params=["error", "map"])
def model(request: pytest.FixtureRequest, spec: DatasetSpec) -> type[BaseModel]:
    """The Telco customer model, in either unknown-category mode."""
    return customer_model(spec, unknown_category=request.param)


def _problems(model: type[BaseModel], body: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """(location, error type) of every problem the model finds in body."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return [(e["loc"], e["type"]) for e in caught.value.errors()]


def test_the_example_customer_is_valid_and_kept_as_sent(model: type[BaseModel], spec: DatasetSpec) -> None:
    customer = example_customer(spec)
    assert customer.keys() == {f.name for f in spec.features}
    parsed = model.model_validate(customer | {"customer_id": "7590-VHVEG"})
    assert parsed.model_dump() == customer | {"customer_id": "7590-VHVEG"}


def test_the_example_customer_lies_in_the_specs_domain(spec: DatasetSpec) -> None:
    customer = example_customer(spec)
    for column in spec.features:
        value = customer[column.name]
        if column.type is Kind.CATEGORICAL:
            assert value in column.categories, column.name
        elif column.type is Kind.BOOLEAN:
            assert isinstance(value, bool), column.name
        else:
            assert column.min is None or value >= column.min, column.name
            assert column.max is None or value <= column.max, column.name
            assert not column.integer or isinstance(value, int), column.name


def test_extra_fields_are_refused(model: type[BaseModel], spec: DatasetSpec) -> None:
    body = example_customer(spec) | {"shoe_size": 44, "Churn": "Yes"}
    assert sorted(_problems(model, body)) == [
        (("Churn",), "extra_forbidden"),
        (("shoe_size",), "extra_forbidden"),
    ]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("tenure", -1, "greater_than_equal"),
        ("tenure", 121, "less_than_equal"),
        ("tenure", 2.5, "int_type"),
        ("monthly_charges", -0.01, "greater_than_equal"),
        ("monthly_charges", 1000.5, "less_than_equal"),
        ("monthly_charges", float("inf"), "finite_number"),
        ("monthly_charges", float("nan"), "finite_number"),
        ("monthly_charges", None, "float_type"),
        ("total_charges", 200_001, "less_than_equal"),
        ("partner", "maybe", "bool_type"),
        ("customer_id", "x" * 201, "string_too_long"),
    ],
)
def test_values_outside_the_specs_domain_are_refused(
    model: type[BaseModel], spec: DatasetSpec, field: str, value: object, error: str
) -> None:
    assert _problems(model, example_customer(spec) | {field: value}) == [((field,), error)]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("tenure", "24", "int_type"),
        ("tenure", True, "int_type"),
        ("monthly_charges", "65.5", "float_type"),
        ("senior_citizen", 0, "bool_type"),
        ("senior_citizen", 1.0, "bool_type"),
        ("senior_citizen", "yes", "bool_type"),
        ("senior_citizen", "true", "bool_type"),
        ("customer_id", 7590, "string_type"),
    ],
)
def test_json_types_are_not_coerced(
    model: type[BaseModel], spec: DatasetSpec, field: str, value: object, error: str
) -> None:
    body = json.dumps(example_customer(spec) | {field: value})
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(body)
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [((field,), error)]


def test_json_schemas_numbers_are_kept(model: type[BaseModel], spec: DatasetSpec) -> None:
    """An integer is a number, and 24.0 an integer, in JSON Schema: both are taken as they are."""
    body = example_customer(spec) | {"tenure": 24.0, "monthly_charges": 65}
    parsed = model.model_validate_json(json.dumps(body))
    assert (parsed.tenure, parsed.monthly_charges) == (24, 65.0)  # type: ignore[attr-defined]
    assert type(parsed.tenure) is int  # type: ignore[attr-defined]
    assert type(parsed.monthly_charges) is float  # type: ignore[attr-defined]


def test_a_batch_holds_one_to_max_batch_customers(spec: DatasetSpec) -> None:
    customer = customer_model(spec, unknown_category="error")
    batch = TypeAdapter(batch_of(customer, 3))
    one = json.dumps(example_customer(spec))
    assert len(batch.validate_json(f"[{one}]")) == 1
    assert len(batch.validate_json(f"[{one},{one},{one}]")) == 3
    for size, error in ((0, "too_short"), (4, "too_long")):
        with pytest.raises(ValidationError) as caught:
            batch.validate_json("[" + ",".join([one] * size) + "]")
        assert [e["type"] for e in caught.value.errors()] == [error]
    schema = batch.json_schema()
    assert (schema["type"], schema["minItems"], schema["maxItems"]) == ("array", 1, 3)


def test_values_on_the_specs_bounds_are_accepted(model: type[BaseModel], spec: DatasetSpec) -> None:
    body = example_customer(spec) | {"tenure": 120, "monthly_charges": 0, "total_charges": 200_000}
    parsed = model.model_validate(body)
    assert (parsed.tenure, parsed.monthly_charges, parsed.total_charges) == (120, 0.0, 200_000.0)  # type: ignore[attr-defined]


def test_unknown_categories_are_refused_in_error_mode(spec: DatasetSpec) -> None:
    model = customer_model(spec, unknown_category="error")
    [(location, error)] = _problems(model, example_customer(spec) | {"contract": "Weekly"})
    assert (location, error) == (("contract",), "literal_error")
    for category in spec.feature("contract").categories:
        assert model.model_validate(example_customer(spec) | {"contract": category}).contract == category  # type: ignore[attr-defined]


def test_unknown_categories_are_accepted_in_map_mode_up_to_a_length(spec: DatasetSpec) -> None:
    model = customer_model(spec, unknown_category="map")
    parsed = model.model_validate(example_customer(spec) | {"contract": "Weekly"})
    assert parsed.contract == "Weekly"  # type: ignore[attr-defined]
    assert _problems(model, example_customer(spec) | {"contract": "W" * 201}) == [
        (("contract",), "string_too_long")
    ]


def test_nullable_fields_and_the_id_may_be_omitted_but_required_ones_may_not(
    model: type[BaseModel], spec: DatasetSpec
) -> None:
    customer = example_customer(spec)
    parsed = model.model_validate({k: v for k, v in customer.items() if k != "total_charges"})
    assert parsed.total_charges is None  # type: ignore[attr-defined]
    assert parsed.customer_id is None  # type: ignore[attr-defined]
    required = {f.name for f in spec.features if not f.nullable}
    assert sorted(_problems(model, {})) == sorted(((name,), "missing") for name in required)


def test_the_json_schema_has_the_specs_fields_and_constraints(spec: DatasetSpec) -> None:
    schema = customer_model(spec, unknown_category="error").model_json_schema()
    assert schema["properties"].keys() == {"customer_id", *(f.name for f in spec.features)}
    assert set(schema["required"]) == {f.name for f in spec.features if not f.nullable}
    assert schema["additionalProperties"] is False
    assert schema["examples"] == [example_customer(spec)]
    tenure = schema["properties"]["tenure"]
    assert (tenure["type"], tenure["minimum"], tenure["maximum"]) == ("integer", 0, 120)
    assert schema["properties"]["contract"]["enum"] == list(spec.feature("contract").categories)
    assert schema["properties"]["senior_citizen"]["type"] == "boolean"
    assert schema["properties"]["senior_citizen"]["description"] == "Aged 65 or older"


@pytest.mark.parametrize("mode", ["error", "map"])
def test_another_specs_model_takes_that_specs_fields(mode: Literal["error", "map"]) -> None:
    bank = parse_spec(BANK)
    model = customer_model(bank, unknown_category=mode)
    assert model.model_fields.keys() == {"client_id", "age", "balance", "country", "active"}
    customer = example_customer(bank)
    assert customer == {"age": 18, "balance": 0, "country": "France", "active": False}
    parsed = model.model_validate({"age": 40, "active": True})
    assert (parsed.country, parsed.balance, parsed.client_id) == (None, None, None)  # type: ignore[attr-defined]
    assert _problems(model, customer | {"age": 17}) == [(("age",), "greater_than_equal")]
    assert _problems(model, customer | {"tenure": 3}) == [(("tenure",), "extra_forbidden")]


def test_an_integer_columns_example_is_a_whole_number_in_json() -> None:
    bank = parse_spec(BANK)
    schema = customer_model(bank, unknown_category="error").model_json_schema()
    assert isinstance(example_customer(bank)["age"], int)
    assert json.dumps(schema["examples"][0]["age"]) == "18"


def test_by_id_a_customer_may_be_sent_with_some_fields_or_none(spec: DatasetSpec) -> None:
    """Fields left out are only marked as not sent (the route looks them up); those sent are
    held to the same rules, and a required field sent as null is still refused."""
    model = request_model(spec, unknown_category="error", by_id=True)
    alone = model.model_validate_json('{"customer_id": "7590-VHVEG"}')
    assert alone.model_fields_set == {"customer_id"}
    some = model.model_validate_json('{"customer_id": "7590-VHVEG", "tenure": 24.0, "contract": "One year"}')
    assert (some.model_fields_set, some.tenure) == ({"customer_id", "tenure", "contract"}, 24)  # type: ignore[attr-defined]
    assert _problems(model, {"customer_id": "x", "tenure": None}) == [(("tenure",), "int_type")]
    assert _problems(model, {"customer_id": "x", "contract": "Weekly"})[0][0] == ("contract",)
    assert _problems(model, {"customer_id": "x", "colour": "red"}) == [(("colour",), "extra_forbidden")]
    full = example_customer(spec) | {"customer_id": "x"}
    assert (
        model.model_validate(full).model_dump()
        == customer_model(spec, unknown_category="error").model_validate(full).model_dump()
    )


def test_by_id_the_schema_is_the_full_customer_or_an_id_with_any_fields(spec: DatasetSpec) -> None:
    schema = TypeAdapter(request_model(spec, unknown_category="error", by_id=True)).json_schema()
    full, by_id = schema["anyOf"]
    required = {c.name for c in spec.features if not c.nullable}
    assert set(full["required"]) == required
    assert by_id["required"] == ["customer_id"]
    assert by_id["properties"]["customer_id"]["type"] == "string"
    assert by_id["properties"].keys() == full["properties"].keys()
    assert not any("default" in field for name, field in by_id["properties"].items() if name in required)
    assert "customer_id" in schema["description"]


def test_without_the_store_the_request_model_is_the_full_customer(spec: DatasetSpec) -> None:
    model = request_model(spec, unknown_category="map", by_id=False)
    assert model.model_json_schema() == customer_model(spec, unknown_category="map").model_json_schema()
