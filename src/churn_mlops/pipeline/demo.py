"""The demo: a customer database of synthetic customers, and an API key to try the server with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from churn_mlops.data.sinks import write_frames
from churn_mlops.data.sources import Source
from churn_mlops.data.synthetic import generate
from churn_mlops.serving.keys import KeyStore
from churn_mlops.settings import Settings

DEMO_ROWS = 7043
DEMO_KEY_NAME = "demo"
DEMO_KEY_SCOPES = ("predict", "admin", "view")


@dataclass(frozen=True)
class DemoDatabase:
    """The demo's customer database: a SQLite file of synthetic Telco customers under CHURN_HOME."""

    path: Path
    rows: int = DEMO_ROWS

    @classmethod
    def from_settings(cls, settings: Settings) -> DemoDatabase:
        """The demo database of this CHURN_HOME."""
        return cls(settings.demo_dir / "customers.db")

    @property
    def source(self) -> Source:
        """The database's customers table, as a source to ingest."""
        return Source(f"sqlite:///{self.path}", table="customers")

    def exists(self) -> bool:
        """Whether the database has been made."""
        return self.path.exists()

    def create(self, advance: Callable[[int], None] = lambda n: None) -> int:
        """Write the synthetic customers, the same ones every time; return the row count."""
        return write_frames(generate(self.rows, seed=0), self.source, progress=advance)


def issue_demo_key(settings: Settings) -> str:
    """A fresh API key named demo, scopes predict, admin and view, replacing the active one."""
    store = KeyStore(settings.serving_database_url, cache_seconds=0)
    try:
        if any(k.name == DEMO_KEY_NAME and not k.revoked for k in store.list()):
            store.revoke(DEMO_KEY_NAME)
        key, _ = store.create(DEMO_KEY_NAME, DEMO_KEY_SCOPES)
    finally:
        store.close()
    return key
