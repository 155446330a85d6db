"""Who may open the dashboard: sign-in links, API keys with the view scope, sessions and sign-out."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from churn_mlops.dashboard.links import sign_in_link
from churn_mlops.dashboard.routes import COOKIE
from churn_mlops.dashboard.sessions import SessionStore
from churn_mlops.monitoring.runs import BATCH, record_run
from churn_mlops.serving.app import create_app
from churn_mlops.serving.keys import KeyStore
from churn_mlops.settings import ServingSettings, Settings, get_settings
from tests.commands import churn
from tests.integration.serving_fixtures import TrainedHome

pytestmark = pytest.mark.slow

PANELS = ("model", "traffic", "scores", "drift", "performance", "alerts", "at-risk", "data-quality")


@dataclass(frozen=True)
class Site:
    """The model server of a trained home, on a serving database of its own, with its keys."""

    settings: Settings
    client: TestClient
    view_key: str
    predict_key: str

    def path_of(self, url: str) -> str:
        """A sign-in URL as the test client requests it (path and query, the host left out)."""
        parts = urlsplit(url)
        return f"{parts.path}?{parts.query}"


@pytest.fixture(scope="module")
def site(trained_home: TrainedHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'serving.db'}"
    serving = ServingSettings(database_url=url, rate_per_second=1000, burst=1000)
    settings = Settings(home=trained_home.home, serving=serving)
    keys = KeyStore(url)
    view_key, _ = keys.create("viewer", ["view"])
    predict_key, _ = keys.create("client", ["predict"])
    keys.close()
    with TestClient(create_app(settings)) as client:
        yield Site(settings, client, view_key, predict_key)


@pytest.fixture
def client(site: Site) -> TestClient:
    """The site's client, signed out."""
    site.client.cookies.clear()
    return site.client


def sign_in(site: Site) -> str:
    """Sign in with a fresh link; returns the session token."""
    response = site.client.get(site.path_of(sign_in_link(site.settings)), follow_redirects=False)
    assert response.status_code == 303, response.text
    return str(response.cookies[COOKIE])


def test_without_a_session_the_dashboard_sends_to_the_sign_in_form(client: TestClient) -> None:
    response = client.get("/dashboard", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/signin"
    form = client.get("/dashboard/signin")
    assert form.status_code == 200
    assert '<form method="post" action="/dashboard/signin">' in form.text
    assert 'name="key"' in form.text


def test_a_sign_in_link_opens_a_session_in_a_strict_cookie(site: Site, client: TestClient) -> None:
    response = client.get(site.path_of(sign_in_link(site.settings)), follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/dashboard"} <= attributes

    page = client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for panel in PANELS:
        assert f'data-panel="{panel}"' in page.text


def test_a_sign_in_link_works_once(site: Site, client: TestClient) -> None:
    link = site.path_of(sign_in_link(site.settings))
    assert client.get(link, follow_redirects=False).status_code == 303
    client.cookies.clear()
    again = client.get(link, follow_redirects=False)
    assert again.status_code == 401
    assert "used already or it has expired" in again.text
    assert COOKIE not in again.cookies


def test_an_expired_sign_in_link_is_refused(site: Site, client: TestClient) -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    store = SessionStore(site.settings.serving_database_url, clock=lambda: an_hour_ago)
    token = store.create_link("sign-in link", ttl_seconds=10)
    store.close()
    response = client.get(f"/dashboard/signin?token={token}", follow_redirects=False)
    assert response.status_code == 401
    assert "expired" in response.text
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_signing_in_with_a_key_needs_the_view_scope(site: Site, client: TestClient) -> None:
    predict_only = client.post("/dashboard/signin", data={"key": site.predict_key}, follow_redirects=False)
    assert predict_only.status_code == 403
    assert "lacks the 'view' scope" in html.unescape(predict_only.text)
    assert COOKIE not in predict_only.cookies

    made_up = client.post("/dashboard/signin", data={"key": "churn_not-a-key"}, follow_redirects=False)
    assert made_up.status_code == 401

    viewer = client.post("/dashboard/signin", data={"key": site.view_key}, follow_redirects=False)
    assert viewer.status_code == 303
    assert viewer.headers["location"] == "/dashboard"
    assert client.get("/dashboard", follow_redirects=False).status_code == 200


def test_the_data_needs_a_session_or_a_view_key(site: Site, client: TestClient) -> None:
    assert client.get("/dashboard/data").status_code == 401
    predict_only = client.get("/dashboard/data", headers={"X-API-Key": site.predict_key})
    assert predict_only.status_code == 403

    by_key = client.get("/dashboard/data", headers={"X-API-Key": site.view_key})
    assert by_key.status_code == 200
    assert by_key.headers["content-type"].startswith("application/json")
    assert set(PANELS) <= by_key.json().keys()

    sign_in(site)
    assert set(PANELS) <= client.get("/dashboard/data").json().keys()


def test_the_data_window_is_7_30_or_90_days(site: Site, client: TestClient) -> None:
    view = {"X-API-Key": site.view_key}
    assert client.get("/dashboard/data?days=5", headers=view).status_code == 422
    assert client.get("/dashboard/data?days=90", headers=view).status_code == 200


def test_the_at_risk_customers_download_as_csv(site: Site, client: TestClient) -> None:
    customer = {
        "customer_id": "7590-VHVEG",
        "churn_probability": 0.91,
        "revenue_at_risk": 350.5,
        "risk": "high",
        "reasons": ["month-to-month contract", "fiber optic"],
    }
    summary = {"run_date": "2024-05-01", "rows_scored": 1, "model_version": "1", "at_risk": [customer]}
    assert record_run(site.settings.serving_database_url, BATCH, "telco", summary)

    response = client.get("/dashboard/at-risk.csv", headers={"X-API-Key": site.view_key})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="at-risk-2024-05-01.csv"' in response.headers["content-disposition"]
    header, *rows = list(csv.reader(io.StringIO(response.text)))
    assert header == ["customer_id", "churn_probability", "revenue_at_risk", "risk", "reasons"]
    assert rows == [["7590-VHVEG", "0.91", "350.5", "high", "month-to-month contract | fiber optic"]]


def test_signing_out_ends_the_session(site: Site, client: TestClient) -> None:
    token = sign_in(site)
    response = client.post("/dashboard/signout", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/signin"
    client.cookies.clear()
    again = client.get("/dashboard", headers={"Cookie": f"{COOKIE}={token}"}, follow_redirects=False)
    assert again.status_code == 303
    data = client.get("/dashboard/data", headers={"Cookie": f"{COOKIE}={token}"})
    assert data.status_code == 401


@pytest.fixture
def site_environment(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """CHURN_* variables that point the command line at the site's home and serving database."""
    monkeypatch.setenv("CHURN_HOME", str(site.settings.home))
    monkeypatch.setenv("CHURN_SERVING__DATABASE_URL", site.settings.serving_database_url)
    get_settings.cache_clear()
    yield site
    get_settings.cache_clear()


def test_churn_dashboard_link_prints_a_link_that_works_once(
    site_environment: Site, client: TestClient
) -> None:
    printed = json.loads(churn("dashboard", "link", "--json"))
    url = printed["url"]
    assert urlsplit(url).path == "/dashboard/signin"
    assert parse_qs(urlsplit(url).query)["token"]
    path = site_environment.path_of(url)
    assert client.get(path, follow_redirects=False).status_code == 303
    assert client.get("/dashboard", follow_redirects=False).status_code == 200
    client.cookies.clear()
    assert client.get(path, follow_redirects=False).status_code == 401


def test_churn_keys_create_makes_view_keys(site_environment: Site, client: TestClient) -> None:
    created = json.loads(churn("keys", "create", "--name", "analyst", "--scope", "view", "--json"))
    assert created["scopes"] == ["view"]
    response = client.get("/dashboard/data", headers={"X-API-Key": created["key"]})
    assert response.status_code == 200


def test_the_dashboard_is_not_in_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/predict" in paths
    assert not [path for path in paths if path.startswith("/dashboard")]
