"""Gateway rules through the app: which routes want JSON, and what /metrics says about keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from churn_mlops.serving.app import create_app
from churn_mlops.serving.metrics import key_label
from churn_mlops.settings import ServingSettings, Settings
from tests.integration.serving_fixtures import TrainedHome

pytestmark = pytest.mark.slow


def _app(home: TrainedHome, **serving: Any) -> TestClient:
    settings = ServingSettings(**({"rate_per_second": 1000, "burst": 1000} | serving))
    return TestClient(create_app(Settings(home=home.home, serving=settings)))


@pytest.fixture
def client(trained_home: TrainedHome) -> Iterator[TestClient]:
    with _app(trained_home) as test_client:
        yield test_client


BODIES: dict[str, Callable[[], dict[str, Any]]] = {
    "none": dict,
    "empty": lambda: {"content": b""},
    "no-length": lambda: {"content": iter([])},  # chunked, as a client that sends no length
    "text": lambda: {"content": b"reload", "headers": {"Content-Type": "text/plain"}},
}


@pytest.mark.parametrize("body", BODIES)
def test_admin_reload_asks_for_a_key_and_scope_not_a_content_type(
    client: TestClient, trained_home: TrainedHome, body: str
) -> None:
    def post(key: str | None) -> Any:
        request = BODIES[body]()
        headers = request.pop("headers", {}) | ({"X-API-Key": key} if key else {})
        return client.post("/admin/reload", headers=headers, **request)

    anonymous = post(None)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"] == "ApiKey"
    assert post(trained_home.predict_key).status_code == 403
    admin = post(trained_home.admin_key)
    assert admin.status_code == 200, admin.text
    assert admin.json()["version"] == "1"


def test_routes_that_read_a_body_still_want_json(client: TestClient, trained_home: TrainedHome) -> None:
    for path in ("/predict", "/predict/batch"):
        refused = client.post(
            path, content=b"{}", headers={"Content-Type": "text/plain", "X-API-Key": trained_home.predict_key}
        )
        assert refused.status_code == 415, refused.text
        assert "application/json" in refused.json()["detail"]


def test_an_unknown_path_is_a_404_whatever_its_content_type(client: TestClient) -> None:
    answer = client.post("/nowhere", content=b"x", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 404


def _rate_limited_series(home: TrainedHome, **serving: Any) -> str:
    with _app(home, rate_per_second=0.01, burst=1, **serving) as client:
        headers = {"X-API-Key": home.predict_key}
        statuses = [
            client.post("/predict", json=home.customers[0], headers=headers).status_code for _ in range(2)
        ]
        assert statuses == [200, 429]
        text = client.get("/metrics").text
    return next(line for line in text.splitlines() if line.startswith("churn_rate_limited_total{"))


def test_metrics_show_a_hash_of_the_key_name_by_default(trained_home: TrainedHome) -> None:
    series = _rate_limited_series(trained_home)
    assert series == f'churn_rate_limited_total{{key="{key_label("client")}"}} 1.0'
    assert "client" not in series.removeprefix("churn_rate_limited_total{key=")


def test_metrics_show_key_names_when_the_operator_allows_it(trained_home: TrainedHome) -> None:
    series = _rate_limited_series(trained_home, metrics_key_names=True)
    assert series == 'churn_rate_limited_total{key="client"} 1.0'
