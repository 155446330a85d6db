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
