"""The OpenAPI contract with an online feature store: Schemathesis against a server whose
customers may be sent by id, where unknown ids (404) and fields that override (200) are answers too."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from churn_mlops.data.spec import load_spec
from tests.e2e.contract import check_contract, generated_cases
from tests.e2e.servers import server
from tests.integration.feast_fixtures import feast_store, write_customers
from tests.integration.serving_fixtures import TrainedHome, make_trained_home

pytestmark = pytest.mark.slow
CASES_PER_OPERATION = 300


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """A trained home whose SQLite online store Feast wrote with its first 20 customers."""
    trained = make_trained_home(tmp_path_factory.mktemp("contract-online"), rows=1000)
    spec = load_spec()
    write_customers(feast_store(trained.home / "features", "churn", spec), trained.customers, spec)
    return trained


def test_by_id_the_server_keeps_its_openapi_contract(home: TrainedHome, tmp_path: Path) -> None:
    with server(home) as (url, _):
        customer_id = home.customers[0]["customer_id"]
        answer = httpx.post(
            f"{url}/predict", json={"customer_id": customer_id}, headers={"X-API-Key": home.predict_key}
        )
        assert answer.status_code == 200, answer.text
        paths = "^/(predict|predict/batch)$"
        report = check_contract(url, home.predict_key, paths, CASES_PER_OPERATION, tmp_path)
    assert "2 selected" in report, report[-5000:]
    assert generated_cases(report) >= 300, report[-5000:]
