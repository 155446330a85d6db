"""The OpenAPI document describes every answer the server gives, its key schemes and batch bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from churn_mlops.data.spec import DatasetSpec
from churn_mlops.serving.app import create_app
from churn_mlops.settings import ServingSettings, Settings

KEYED = {
    ("post", "/predict"): {"401", "403", "413", "415", "422", "429", "503"},
    ("post", "/predict/batch"): {"401", "403", "413", "415", "422", "429", "503"},
    ("get", "/model"): {"401", "403", "429", "503"},
    ("post", "/admin/reload"): {"401", "403", "409", "413", "415", "429", "503"},
}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory, spec: DatasetSpec) -> dict[str, Any]:
    """The document of a server allowing batches of 7 (the app is built, never started)."""
    home = Path(tmp_path_factory.mktemp("openapi"))
    settings = Settings(home=home, serving=ServingSettings(max_batch=7))
    return create_app(settings, spec=spec).openapi()


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    name = schema["$ref"].rsplit("/", 1)[-1]
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


@pytest.mark.parametrize(("method", "path"), sorted(KEYED))
def test_every_refusal_of_a_keyed_route_is_documented(
    document: dict[str, Any], method: str, path: str
) -> None:
    responses = document["paths"][path][method]["responses"]
    assert set(responses) == {"200", *KEYED[method, path]}
    for status in KEYED[method, path]:
        schema = _resolve(document, responses[status]["content"]["application/json"]["schema"])
        assert schema["required"][0] == "detail", status
        assert schema["properties"]["detail"]["type"] == "string", status
    assert responses["429"]["headers"]["Retry-After"]["required"] is True
    assert "WWW-Authenticate" in responses["401"]["headers"]


def test_a_422_is_documented_as_the_server_sends_it(document: dict[str, Any]) -> None:
    """`detail` is one line of text and `errors` lists {field, problem, input}, not FastAPI's
    default list of {loc, msg, type}, which the document no longer mentions."""
    answer = document["paths"]["/predict"]["post"]["responses"]["422"]
    schema = _resolve(document, answer["content"]["application/json"]["schema"])
    assert set(schema["required"]) == {"detail", "errors"}
    problem = _resolve(document, schema["properties"]["errors"]["items"])
    assert problem["properties"].keys() == {"field", "problem", "input"}
    assert set(problem["required"]) == {"field", "problem"}
    assert not {"HTTPValidationError", "ValidationError"} & document["components"]["schemas"].keys()


def test_the_api_key_schemes_are_declared_on_every_keyed_route(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"}.items() <= schemes["ApiKeyHeader"].items()
    assert (schemes["BearerKey"]["type"], schemes["BearerKey"]["scheme"]) == ("http", "bearer")
    for method, path in KEYED:
        assert document["paths"][path][method]["security"] == [{"ApiKeyHeader": []}, {"BearerKey": []}]
    assert "security" not in document["paths"]["/health/ready"]["get"]


def test_a_batch_is_documented_with_its_bounds(document: dict[str, Any]) -> None:
    body = document["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]
    schema = body["schema"]
    assert (schema["type"], schema["minItems"], schema["maxItems"]) == ("array", 1, 7)


def test_readiness_documents_both_answers(document: dict[str, Any]) -> None:
    responses = document["paths"]["/health/ready"]["get"]["responses"]
    assert {"200", "503"} <= responses.keys()
    assert "status" in responses["503"]["content"]["application/json"]["schema"]["properties"]


@pytest.fixture(scope="module")
def by_id_document(tmp_path_factory: pytest.TempPathFactory, spec: DatasetSpec) -> dict[str, Any]:
    """The document of a server whose home has a SQLite online store (the app is never started)."""
    home = Path(tmp_path_factory.mktemp("openapi-by-id"))
    (home / "features").mkdir()
    (home / "features" / "online.db").touch()
    return create_app(Settings(home=home), spec=spec).openapi()


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_with_an_online_store_unknown_and_stale_customers_are_documented(
    by_id_document: dict[str, Any], path: str
) -> None:
    responses = by_id_document["paths"][path]["post"]["responses"]
    assert set(responses) == {"200", "404", "409", *KEYED["post", path]}
    for status in ("404", "409"):
        schema = _resolve(by_id_document, responses[status]["content"]["application/json"]["schema"])
        assert set(schema["required"]) == {"detail", "customer_ids"}
        assert "by id" in responses[status]["description"]
    reload = by_id_document["paths"]["/admin/reload"]["post"]["responses"]
    assert "404" not in reload
    assert "champion" in reload["409"]["description"]


def test_with_an_online_store_a_customer_may_be_sent_by_id(by_id_document: dict[str, Any]) -> None:
    """The body is the full customer or an id with any of the fields, in both prediction routes."""
    content = by_id_document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    customer = _resolve(by_id_document, content["schema"])
    full, by_id = customer["anyOf"]
    assert {"tenure", "contract", "monthly_charges"} <= set(full["required"])
    assert by_id["required"] == ["customer_id"]
    batch = by_id_document["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert batch["schema"]["items"] == content["schema"]


def test_without_an_online_store_every_required_field_is_required(document: dict[str, Any]) -> None:
    content = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    customer = _resolve(document, content["schema"])
    assert "anyOf" not in customer
    assert {"tenure", "contract", "monthly_charges"} <= set(customer["required"])
