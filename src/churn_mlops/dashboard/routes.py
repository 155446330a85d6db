"""The dashboard's routes: the page, its data, the at-risk CSV, sign-in and the static files.

The page and its data need a session (a cookie from a sign-in link or the sign-in form) or,
for the data and the CSV, an API key with the `view` scope. None of these routes is part of
the public API's OpenAPI document.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import importlib.util
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from churn_mlops.dashboard import panels
from churn_mlops.dashboard.models import model_panel
from churn_mlops.dashboard.sessions import SessionStore
from churn_mlops.dashboard.store import DashboardStore
from churn_mlops.models.catalog import Catalog, catalog_for
from churn_mlops.serving.deps import get_services
from churn_mlops.settings import Settings

if TYPE_CHECKING:
    from jinja2 import Environment

COOKIE = "churn_session"
VIEW = "view"
WINDOWS = (7, 30, 90)
HERE = Path(__file__).parent
Days = Annotated[int, Query(description="Days shown: 7, 30 or 90.")]


@dataclass
class Dashboard:
    """The dashboard's own services: sessions, the results store and the registry catalog."""

    settings: Settings
    sessions: SessionStore = field(init=False)
    store: DashboardStore = field(init=False)
    catalog: Catalog = field(init=False)

    def __post_init__(self) -> None:
        url, timeout = self.settings.serving_database_url, self.settings.serving.database_timeout_seconds
        self.sessions = SessionStore(
            url, session_hours=self.settings.dashboard.session_hours, timeout=timeout
        )
        self.store = DashboardStore(url, timeout)
        self.catalog = catalog_for(self.settings)

    def close(self) -> None:
        """Release the connections."""
        self.sessions.close()
        self.store.close()

    def panels(self, request: Request, days: int) -> dict[str, Any]:
        """Every panel's data for the last `days` days."""
        served = get_services(request).holder.current
        snapshot = self.store.snapshot(days)
        return panels.build(snapshot, model_panel(served, self.catalog, self.settings.audit_log))


router = APIRouter(prefix="/dashboard", include_in_schema=False)


def mount(app: FastAPI, settings: Settings) -> Dashboard:
    """Add the dashboard to the app; the caller closes what this returns when the app stops."""
    dashboard = Dashboard(settings)
    app.state.dashboard = dashboard
    app.include_router(router)
    return dashboard


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


@router.get("")
async def page(request: Request, days: Days = 30) -> Response:
    """The dashboard page; without a session, the sign-in form."""
    if await _session(request) is None:
        return RedirectResponse("/dashboard/signin", status_code=303)
    days = _window(days)
    data = await asyncio.to_thread(_dashboard(request).panels, request, days)
    html = (
        _templates()
        .get_template("dashboard.html")
        .render(panels=data, days=days, windows=WINDOWS, data_json=_script_json(data))
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/data")
async def data(request: Request, days: Days = 30) -> Response:
    """The panels' data as JSON (a session or a key with the view scope)."""
    await _viewer(request)
    found = await asyncio.to_thread(_dashboard(request).panels, request, _window(days))
    return Response(json.dumps(found), media_type="application/json", headers={"Cache-Control": "no-store"})


@router.get("/histogram")
async def histogram(request: Request, day: str, version: str, feature: str) -> Response:
    """A feature's histogram in one daily window against the reference (the drift panel's click)."""
    await _viewer(request)
    window = await asyncio.to_thread(_dashboard(request).store.window, day, version)
    found = panels.histogram(window, feature)
    if found is None:
        raise HTTPException(404, f"no histogram of {feature!r} stored for {day} (version {version})")
    return Response(json.dumps(found), media_type="application/json")


@router.get("/at-risk.csv")
async def at_risk_csv(request: Request) -> Response:
    """The latest batch run's customers of most revenue at risk, as CSV."""
    await _viewer(request)
    dashboard = _dashboard(request)
    snapshot = await asyncio.to_thread(dashboard.store.snapshot, 1)
    rows = panels.at_risk(snapshot.runs)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["customer_id", "churn_probability", "revenue_at_risk", "risk", "reasons"])
    for customer in rows.get("customers", []):
        writer.writerow(
            [
                customer["customer_id"],
                customer["churn_probability"],
                customer["revenue_at_risk"],
                customer["risk"],
                " | ".join(customer["reasons"]),
            ]
        )
    name = f"at-risk-{rows.get('run_date') or 'none'}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/signin")
async def signin_page(request: Request, token: str | None = None) -> Response:
    """With a one-time token: open a session and go to the dashboard. Without: the sign-in form."""
    if token is None:
        return _signin_form()
    dashboard = _dashboard(request)
    session = await asyncio.to_thread(dashboard.sessions.redeem_link, token)
    if session is None:
        return _signin_form("This sign-in link is not valid: it was used already or it has expired.", 401)
    return _signed_in(request, session)


@router.post("/signin")
async def signin_with_key(request: Request) -> Response:
    """Sign in with an API key that has the view scope (a form field `key`)."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    raw = (form.get("key") or [""])[0].strip()
    key = await get_services(request).keys.authenticate_async(raw) if raw else None
    if key is None:
        return _signin_form("That API key is not valid.", 401)
    if VIEW not in key.scopes:
        return _signin_form(f"The API key {key.name!r} lacks the {VIEW!r} scope.", 403)
    session = await asyncio.to_thread(_dashboard(request).sessions.open_session, key.name)
    return _signed_in(request, session)


@router.post("/signout")
async def signout(request: Request) -> Response:
    """End the session and go back to the sign-in form."""
    token = request.cookies.get(COOKIE)
    if token:
        await asyncio.to_thread(_dashboard(request).sessions.end_session, token)
    response = RedirectResponse("/dashboard/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """plotly.js (from the plotly package, so nothing is fetched from the internet) and our files."""
    path = _static_files().get(name)
    if path is None:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


async def _session(request: Request) -> str | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    return await asyncio.to_thread(_dashboard(request).sessions.session, token)


async def _viewer(request: Request) -> str:
    """Who may read the data: the signed-in browser's key name, or a key with the view scope."""
    from churn_mlops.serving.deps import authorize

    who = await _session(request)
    if who is not None:
        return who
    if request.headers.get("x-api-key") or request.headers.get("authorization"):
        return (await authorize(request, VIEW)).name
    raise HTTPException(401, "sign in at /dashboard/signin, or send an API key with the 'view' scope")


def _signed_in(request: Request, session: str) -> Response:
    response = RedirectResponse("/dashboard", status_code=303)
    settings = _dashboard(request).settings
    response.set_cookie(
        COOKIE,
        session,
        max_age=int(settings.dashboard.session_hours * 3600),
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or (settings.dashboard.public_url or "").startswith("https://"),
    )
    return response


def _signin_form(message: str | None = None, status: int = 200) -> HTMLResponse:
    html = _templates().get_template("signin.html").render(message=message)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _window(days: int) -> int:
    if days not in WINDOWS:
        raise HTTPException(422, f"days must be one of {', '.join(map(str, WINDOWS))}")
    return days


def _script_json(data: dict[str, Any]) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@functools.cache
def _templates() -> Environment:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape())


@functools.cache
def _static_files() -> dict[str, Path]:
    files = {path.name: path for path in (HERE / "static").iterdir() if path.is_file()}
    spec = importlib.util.find_spec("plotly")
    if spec is not None and spec.origin is not None:
        plotly = Path(spec.origin).parent / "package_data" / "plotly.min.js"
        if plotly.exists():
            files["plotly.min.js"] = plotly
    return files
