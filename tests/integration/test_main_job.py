"""The main job as the CLI drives it: the demo database, its stages in order, the demo key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from churn_mlops.data.ingest import IngestResult
from churn_mlops.data.sources import read_source
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.pipeline.demo import DemoDatabase, issue_demo_key
from churn_mlops.pipeline.main_job import run_main_job
from churn_mlops.serving.keys import KeyStore
from churn_mlops.settings import get_settings


class RecordingReporter:
    """A reporter that writes down what the job told it, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def notice(self, message: str) -> None:
        self.events.append(f"notice {message.split()[0]}")

    @contextmanager
    def stage(self, message: str) -> Iterator[Callable[[str], None]]:
        self.events.append(f"stage {message.split()[0]}")
        yield lambda step: None

    @contextmanager
    def count(self, message: str, total: int) -> Iterator[Callable[[int], None]]:
        self.events.append(f"count {total}")
        yield lambda n: None

    def ingested(self, result: IngestResult) -> None:
        self.events.append(f"ingested {result.report.rows_valid}")


def test_the_demo_database_holds_the_same_customers_every_time(tmp_path: Path) -> None:
    first, second = DemoDatabase(tmp_path / "a.db", rows=300), DemoDatabase(tmp_path / "b.db", rows=300)
    assert (first.create(), second.create()) == (300, 300)
    frames = [read_source(db.source) for db in (first, second)]
    assert frames[0].equals(frames[1])


def test_a_fresh_demo_key_replaces_the_last_one(churn_home: Path) -> None:
    settings = get_settings()
    old, new = issue_demo_key(settings), issue_demo_key(settings)
    store = KeyStore(settings.serving_database_url, cache_seconds=0)
    try:
        assert store.authenticate(old) is None
        served = store.authenticate(new)
        assert served is not None
        assert served.scopes == {"predict", "admin", "view"}
        assert [k.revoked for k in store.list() if k.name == "demo"] == [True, False]
    finally:
        store.close()


@pytest.mark.slow
def test_the_job_reports_ingestion_before_training(churn_home: Path, spec: DatasetSpec) -> None:
    reporter = RecordingReporter()
    result = run_main_job(get_settings(), spec, issue_key=True, reporter=reporter)
    assert reporter.events == [
        "notice creating",
        "count 7043",
        "stage ingesting",
        "ingested 7043",
        "stage training",
    ]
    assert result.summary()["training"]["promoted"] is True
    assert result.demo_key is not None
    assert "demo_key" not in result.summary()
