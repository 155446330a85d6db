"""The model server through its ASGI app: answers, bad input, gateway functions, the log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from churn_mlops.models.registry import Registry
from churn_mlops.serving.app import create_app
from churn_mlops.serving.keys import KeyStore
from churn_mlops.serving.predlog import PredictionLog
from churn_mlops.settings import ServingSettings, Settings
from tests.integration.predlog_rows import logged
from tests.integration.serving_fixtures import TrainedHome

pytestmark = pytest.mark.slow


def _settings(home: TrainedHome, **serving: Any) -> Settings:
    return Settings(
        home=home.home, serving=ServingSettings(**({"rate_per_second": 1000, "burst": 1000} | serving))
    )


@pytest.fixture
def client(trained_home: TrainedHome) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(trained_home))) as test_client:
        yield test_client


def _post(client: TestClient, body: Any, key: str | None, path: str = "/predict", **kwargs: Any) -> Any:
    headers = {"X-API-Key": key} if key else {}
    return client.post(path, json=body, headers=headers | kwargs.pop("headers", {}), **kwargs)


def test_predict_answers_the_seed_contract(client: TestClient, trained_home: TrainedHome) -> None:
    customer = trained_home.customers[0]
    response = _post(client, customer, trained_home.predict_key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["churn_probability"] <= 1.0
    assert body["prediction"] in (0, 1)
    assert body["risk"] in {"high", "medium", "low"}
    assert body["model_version"] == "1"
    assert body["customer_id"] == customer["customer_id"]
    assert response.headers["x-request-id"] == body["request_id"]


def test_online_scores_equal_the_registry_predictor(client: TestClient, trained_home: TrainedHome) -> None:
    registry = Registry(f"sqlite:///{trained_home.home / 'mlflow.db'}", "churn", trained_home.home / "models")
    _, predictor = registry.load("champion")
    customers = trained_home.customers[:10]
    columns = {name: [c.get(name) for c in customers] for name in customers[0]}
    expected = predictor.predict_proba(columns)
    online = [_post(client, c, trained_home.predict_key).json()["churn_probability"] for c in customers]
    batch = _post(client, customers, trained_home.predict_key, "/predict/batch").json()["predictions"]
    assert np.array_equal(np.array(online), expected)
    assert np.array_equal(np.array([p["churn_probability"] for p in batch]), expected)


def test_explanations_name_features_and_sum_to_the_score(
    client: TestClient, trained_home: TrainedHome
) -> None:
    body = _post(
        client, trained_home.customers[1], trained_home.predict_key, params={"explain": "true"}
    ).json()
    reasons = body["reasons"]
    assert len(reasons) == 5
    assert all({"feature", "value", "contribution"} <= r.keys() for r in reasons)
    magnitudes = [abs(r["contribution"]) for r in reasons]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert "reasons" not in _post(client, trained_home.customers[1], trained_home.predict_key).json()


def test_batch_keeps_order_and_ids(client: TestClient, trained_home: TrainedHome) -> None:
    customers = trained_home.customers[:4]
    body = _post(client, customers, trained_home.predict_key, "/predict/batch").json()
    assert [p["customer_id"] for p in body["predictions"]] == [c["customer_id"] for c in customers]
    assert len({p["request_id"] for p in body["predictions"]}) == 4


def _without(customer: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in customer.items() if k != field}


BAD_BODIES = [
    ("missing field", lambda c: _without(c, "tenure"), "tenure", "Field required"),
    ("wrong type", lambda c: c | {"tenure": "abc"}, "tenure", "valid integer"),
    ("out of range", lambda c: c | {"tenure": -3}, "tenure", "greater than or equal to 0"),
    ("unknown category", lambda c: c | {"contract": "Weekly"}, "contract", "Month-to-month"),
    ("not a boolean", lambda c: c | {"partner": "maybe"}, "partner", "boolean"),
    ("unknown extra field", lambda c: c | {"shoe_size": 44}, "shoe_size", "unknown field"),
    ("null in a required field", lambda c: c | {"monthly_charges": None}, "monthly_charges", "valid number"),
    ("not an object", lambda c: [1, 2], "body", "object"),
    ("number in quotes", lambda c: c | {"tenure": "24"}, "tenure", "valid integer"),
    ("number for a boolean", lambda c: c | {"senior_citizen": 0}, "senior_citizen", "valid boolean"),
    ("word for a boolean", lambda c: c | {"senior_citizen": "yes"}, "senior_citizen", "valid boolean"),
]


@pytest.mark.parametrize(("case", "damage", "field", "problem"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_input_is_a_422_naming_the_field(
    client: TestClient,
    trained_home: TrainedHome,
    case: str,
    damage: Any,
    field: str,
    problem: str,
) -> None:
    response = _post(client, damage(dict(trained_home.customers[0])), trained_home.predict_key)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any(e["field"] == field and problem in e["problem"] for e in errors), errors
    assert field in response.json()["detail"]


def test_json_schemas_numbers_are_taken_as_they_are(client: TestClient, trained_home: TrainedHome) -> None:
    """A whole number written as 24.0 is an integer, and 65 a decimal, as JSON Schema has it."""
    customer = trained_home.customers[0] | {"tenure": 24, "monthly_charges": 65.0}
    widened = customer | {"tenure": 24.0, "monthly_charges": 65}
    answers = [_post(client, body, trained_home.predict_key) for body in (customer, widened)]
    assert [a.status_code for a in answers] == [200, 200], answers[1].text
    assert answers[0].json()["churn_probability"] == answers[1].json()["churn_probability"]


def test_a_422_lists_every_problem_and_echoes_only_inputs_that_were_sent(
    client: TestClient, trained_home: TrainedHome
) -> None:
    body = {"tenure": "x", "contract": "Weekly"}  # everything else missing
    response = _post(client, body, trained_home.predict_key)
    assert response.status_code == 422, response.text
    problems = response.json()["errors"]
    sent = {e["field"]: e.get("input") for e in problems if e["problem"] != "Field required"}
    assert sent == {"tenure": "x", "contract": "Weekly"}
    missing = [e for e in problems if e["problem"] == "Field required"]
    assert {"gender", "monthly_charges", "payment_method"} <= {e["field"] for e in missing}
    assert all("input" not in e for e in missing)  # a missing field has no input to echo
    assert response.json()["detail"].endswith(f"; and {len(problems) - 5} more (see errors)")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(client: TestClient, trained_home: TrainedHome, literal: str) -> None:
    body = (
        json.dumps(_without(trained_home.customers[0], "monthly_charges"))[:-1]
        + f', "monthly_charges": {literal}}}'
    )
    response = client.post(
        "/predict",
        content=body,
        headers={"X-API-Key": trained_home.predict_key, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "monthly_charges" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        ('{"tenure": 3,', "application/json", 422, "malformed JSON"),
        ("tenure=3", "application/x-www-form-urlencoded", 415, "application/json"),
        ("{}", "text/plain", 415, "application/json"),
    ],
)
def test_malformed_bodies_and_content_types(
    client: TestClient,
    trained_home: TrainedHome,
    body: str,
    content_type: str,
    status: int,
    message: str,
) -> None:
    response = client.post(
        "/predict",
        content=body,
        headers={"X-API-Key": trained_home.predict_key, "Content-Type": content_type},
    )
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_size_and_batch_limits(trained_home: TrainedHome) -> None:
    with TestClient(create_app(_settings(trained_home, max_body_bytes=2048, max_batch=3))) as client:
        big = _post(client, trained_home.customers * 5, trained_home.predict_key, "/predict/batch")
        assert big.status_code == 413
        assert "2048 bytes" in big.json()["detail"]
        body = json.dumps(trained_home.customers * 5).encode()
        chunked = client.post(  # no Content-Length: the limit is enforced as the body streams in
            "/predict/batch",
            content=(body[i : i + 500] for i in range(0, len(body), 500)),
            headers={"X-API-Key": trained_home.predict_key, "Content-Type": "application/json"},
        )
        assert chunked.status_code == 413, chunked.text
        assert "2048 bytes" in chunked.json()["detail"]
        over = _post(client, trained_home.customers[:4], trained_home.predict_key, "/predict/batch")
        assert over.status_code in (413, 422)
        four = [{"tenure": 1}] * 4
        assert _post(client, four, trained_home.predict_key, "/predict/batch").status_code == 422
        empty = _post(client, [], trained_home.predict_key, "/predict/batch")
        assert empty.status_code == 422
        assert empty.json()["errors"] == [
            {"field": "body", "problem": "a list of at least 1 item, not 0", "input": "[]"}
        ]


def test_authentication_and_scopes(client: TestClient, trained_home: TrainedHome) -> None:
    customer = trained_home.customers[0]
    missing = _post(client, customer, None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "ApiKey"
    assert _post(client, customer, "churn_not-a-real-key").status_code == 401
    assert _post(client, customer, trained_home.admin_key).status_code == 403
    assert client.post("/admin/reload", headers={"X-API-Key": trained_home.predict_key}).status_code == 403
    bearer = client.post(
        "/predict", json=customer, headers={"Authorization": f"Bearer {trained_home.predict_key}"}
    )
    assert bearer.status_code == 200


def test_the_key_is_checked_before_the_body(client: TestClient, trained_home: TrainedHome) -> None:
    bad = trained_home.customers[0] | {"tenure": "many"}
    assert _post(client, bad, None).status_code == 401
    assert _post(client, bad, trained_home.admin_key).status_code == 403
    assert _post(client, bad, trained_home.predict_key).status_code == 422


def test_the_prediction_routes_are_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, answer in (("/predict", "PredictionPublic"), ("/predict/batch", "BatchPublic")):
        operation = paths[path]["post"]
        assert "requestBody" in operation
        assert any(p["name"] == "explain" for p in operation["parameters"])
        assert answer in str(operation["responses"]["200"])


def test_rate_limit_answers_429_with_retry_after(trained_home: TrainedHome) -> None:
    with TestClient(create_app(_settings(trained_home, rate_per_second=0.5, burst=2))) as client:
        statuses = [_post(client, trained_home.customers[0], trained_home.predict_key) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert int(statuses[2].headers["retry-after"]) >= 1


def test_health_model_and_metrics(client: TestClient, trained_home: TrainedHome) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    assert client.get("/health/ready").json()["model_version"] == "1"
    model = client.get("/model", headers={"X-API-Key": trained_home.predict_key}).json()
    assert model["version"] == "1"
    assert 0 < model["threshold"] < 1
    assert "tenure" in model["request_schema"]["properties"]
    _post(client, trained_home.customers[0], trained_home.predict_key)
    text = client.get("/metrics").text
    assert 'churn_http_requests_total{route="/predict",status="200"}' in text
    assert 'churn_model_info{version="1"} 1.0' in text
    assert "churn_prediction_score_bucket" in text


def test_request_ids_are_accepted_or_generated(client: TestClient, trained_home: TrainedHome) -> None:
    given = _post(
        client, trained_home.customers[0], trained_home.predict_key, headers={"X-Request-ID": "abc-123"}
    )
    assert given.headers["x-request-id"] == "abc-123"
    assert given.json()["request_id"] == "abc-123"
    hostile = _post(
        client, trained_home.customers[0], trained_home.predict_key, headers={"X-Request-ID": "a b\n"}
    )
    assert hostile.headers["x-request-id"] != "a b\n"


def test_every_prediction_is_logged(client: TestClient, trained_home: TrainedHome) -> None:
    ids = [f"log-test-{i}" for i in range(5)]
    for request_id in ids:
        _post(
            client, trained_home.customers[0], trained_home.predict_key, headers={"X-Request-ID": request_id}
        )
    rows = logged(PredictionLog(f"sqlite:///{trained_home.home / 'serving.db'}"))
    rows = rows.filter(pl.col("request_id").is_in(ids))
    assert sorted(rows.get_column("request_id").to_list()) == ids
    assert set(rows.get_column("key_name")) == {"client"}
    assert set(rows.get_column("model_version")) == {"1"}
    assert json.loads(rows.get_column("inputs")[0])["tenure"] == trained_home.customers[0]["tenure"]


def test_every_answer_ends_its_request_in_flight(client: TestClient, trained_home: TrainedHome) -> None:
    """The prediction log's batching window asks how many requests are in flight and how many have
    arrived: every answer, good or bad, must take its request off the first count."""
    key, customer = trained_home.predict_key, trained_home.customers[0]
    arrived = client.app.state.in_flight.arrivals()  # type: ignore[attr-defined]
    assert _post(client, customer, key).status_code == 200
    assert _post(client, customer, None).status_code == 401
    assert _post(client, customer | {"tenure": "many"}, key).status_code == 422
    assert _post(client, [customer], key, path="/predict/batch").status_code == 200
    assert client.post("/predict", content=b"{", headers={"X-API-Key": key}).status_code in (400, 415, 422)
    assert client.get("/health/live").status_code == 200
    assert client.get("/no/such/route").status_code == 404
    assert client.app.state.in_flight() == 0  # type: ignore[attr-defined]
    assert client.app.state.in_flight.arrivals() == arrived + 7  # type: ignore[attr-defined]


def test_no_champion_means_not_ready(tmp_path: Any, trained_home: TrainedHome) -> None:
    settings = Settings(home=tmp_path / "empty")
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/ready").status_code == 503
        assert client.get("/health/live").status_code == 200
        key, _ = KeyStore(settings.serving_database_url).create("client", ["predict"])
        refused = _post(client, trained_home.customers[0], key)
    assert refused.status_code == 503
    assert refused.json() == {"detail": "no verified model is loaded"}


def test_cors_covers_the_prediction_routes(trained_home: TrainedHome) -> None:
    origin = {"Origin": "https://app.example"}
    with TestClient(create_app(_settings(trained_home, cors_origins=["https://app.example"]))) as client:
        preflight = client.options(
            "/predict",
            headers=origin
            | {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"},
        )
        answered = _post(client, trained_home.customers[0], trained_home.predict_key, headers=origin)
        refused = _post(client, trained_home.customers[0], None, headers=origin)
        stranger = _post(
            client,
            trained_home.customers[0],
            trained_home.predict_key,
            headers={"Origin": "https://evil.example"},
        )
    assert preflight.status_code == 200
    for response in (preflight, answered, refused):
        assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert (answered.status_code, refused.status_code) == (200, 401)
    assert "access-control-allow-origin" not in stranger.headers


def test_unknown_categories_can_be_mapped_instead_of_refused(trained_home: TrainedHome) -> None:
    with TestClient(create_app(_settings(trained_home, unknown_category="map"))) as client:
        response = _post(client, trained_home.customers[0] | {"contract": "Weekly"}, trained_home.predict_key)
    assert response.status_code == 200, response.text
    assert 0 <= response.json()["churn_probability"] <= 1


def test_the_readme_example_request_works(client: TestClient, trained_home: TrainedHome) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## The model server")[1]
    body = section.split("-d '")[1].split("'")[0]
    response = client.post(
        "/predict",
        content=body,
        headers={"Content-Type": "application/json", "X-API-Key": trained_home.predict_key},
    )
    assert response.status_code == 200, response.text
