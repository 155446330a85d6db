"""One-time sign-in links to the dashboard, as `churn dashboard link` and the main job print them."""

from __future__ import annotations

from urllib.parse import urlencode

from churn_mlops import migrations
from churn_mlops.dashboard.sessions import SessionStore
from churn_mlops.settings import Settings


def sign_in_link(
    settings: Settings, ttl_seconds: int | None = None, *, port: int | None = None, name: str = "sign-in link"
) -> str:
    """A URL that signs a browser in once, within `ttl_seconds` (the configured lifetime by default)."""
    ttl = ttl_seconds or settings.dashboard.link_ttl_seconds
    url = settings.serving_database_url
    migrations.upgrade(url)
    store = SessionStore(url, timeout=settings.serving.database_timeout_seconds)
    try:
        token = store.create_link(name, ttl)
    finally:
        store.close()
    return f"{base_url(settings, port)}/dashboard/signin?{urlencode({'token': token})}"


def base_url(settings: Settings, port: int | None = None) -> str:
    """The server's address as a browser reaches it: `dashboard.public_url`, else http://HOST:PORT."""
    if settings.dashboard.public_url:
        return settings.dashboard.public_url.rstrip("/")
    host = settings.serving.host
    if host in {"0.0.0.0", "::", ""}:  # listening everywhere: this machine answers on loopback
        host = "127.0.0.1"
    return f"http://{host}:{port or settings.serving.port}"
