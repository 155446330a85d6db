"""The main job: customer data validated into the lake, a model trained, registered and gated."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from churn_mlops.data.ingest import IngestResult, ingest
from churn_mlops.data.lake import Lake
from churn_mlops.data.sources import Source
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.monitoring.runs import record_ingest
from churn_mlops.pipeline.demo import DemoDatabase, issue_demo_key
from churn_mlops.pipeline.training import train_and_register
from churn_mlops.settings import Settings

Step = Callable[[str], None]
Advance = Callable[[int], None]


class Reporter(Protocol):
    """Where the main job tells how far it has got; the CLI draws it, `Quiet` ignores it."""

    def notice(self, message: str) -> None:
        """Something the user should know, once."""

    def stage(self, message: str) -> AbstractContextManager[Step]:
        """A stage without measurable progress; yields a reporter of its steps."""

    def count(self, message: str, total: int) -> AbstractContextManager[Advance]:
        """A stage of `total` units; yields a function advancing it by n."""

    def ingested(self, result: IngestResult) -> None:
        """The data is in the lake; training starts next."""


class Quiet:
    """A reporter that reports nothing."""

    def notice(self, message: str) -> None:
        """Ignore the notice."""

    def stage(self, message: str) -> AbstractContextManager[Step]:
        """A stage whose steps go nowhere."""
        return nullcontext(lambda step: None)

    def count(self, message: str, total: int) -> AbstractContextManager[Advance]:
        """A count that goes nowhere."""
        return nullcontext(lambda n: None)

    def ingested(self, result: IngestResult) -> None:
        """Ignore the ingestion report."""


@dataclass(frozen=True)
class MainJobResult:
    """What the main job did: the ingestion, the training summary, and the demo key if asked for."""

    ingest: IngestResult
    training: dict[str, Any]
    demo_key: str | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary; the demo key is left out."""
        return {"ingest": self.ingest.summary(), "training": self.training}


def run_main_job(
    settings: Settings,
    spec: DatasetSpec,
    source: Source | None = None,
    *,
    trials: int = 0,
    issue_key: bool = False,
    reporter: Reporter | None = None,
) -> MainJobResult:
    """Ingest a source (default: the demo database), train on it, register and gate the model.

    `trials` > 0 tunes LightGBM first; `issue_key` ends by making a fresh demo API key to serve with.
    """
    report = reporter or Quiet()
    origin = source or demo_source(settings, report)
    lake = Lake(settings.lake_dir)
    with report.stage(f"ingesting {origin.describe()}"):
        ingested = ingest(origin, spec, lake=lake, quarantine_dir=settings.quarantine_dir)
    record_ingest(settings, ingested, origin.describe())
    assert ingested.version is not None
    report.ingested(ingested)
    with report.stage("training") as step:
        outcome = train_and_register(
            lake.read(ingested.version), ingested.version, spec, settings, trials=trials, step=step
        )
    key = issue_demo_key(settings) if issue_key else None
    return MainJobResult(ingested, outcome.summary(), key)


def demo_source(settings: Settings, reporter: Reporter) -> Source:
    """The demo customer database as a source, made first if it does not exist yet."""
    demo = DemoDatabase.from_settings(settings)
    if not demo.exists():
        reporter.notice(f"creating the demo customer database {demo.path}")
        with reporter.count("generating customers", demo.rows) as advance:
            demo.create(advance)
    return demo.source
