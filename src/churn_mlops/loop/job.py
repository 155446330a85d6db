"""The loop job: monitor, decide, and when a rule fires ingest, train, gate and promote.

One run at a time (the `lock:loop` row; a crashed run's lock is taken over). Idempotent: the
training rows are stored as a lake version (its content hash), and a version already trained on
that data is not trained again. Servers pick a new champion up by polling the alias
(`serving.reload_poll_seconds`). Every run that trains is written to the audit trail.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl
import sqlalchemy as sa

from churn_mlops.data.snapshots import newest_snapshots
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.errors import ModelNotFoundError
from churn_mlops.loop.rules import Evidence, Rule, decide
from churn_mlops.models.catalog import VersionInfo
from churn_mlops.monitoring import tables
from churn_mlops.monitoring.store import MonitorStore
from churn_mlops.settings import Settings

if TYPE_CHECKING:
    from churn_mlops.data.lake import Lake
    from churn_mlops.models.registry import Registry

logger = logging.getLogger(__name__)
LOCK = "lock:loop"
LOCK_TTL = timedelta(hours=6)  # longer than any training run; a crashed run's lock lapses after it
KEPT, PROMOTED, REJECTED = "kept", "promoted", "rejected"


@dataclass
class LoopResult:
    """What one loop run decided and did."""

    champion: str
    rules: list[Rule]
    dry_run: bool
    monitoring: dict[str, Any]
    outcome: str = KEPT
    reason: str = ""
    version: str | None = None
    data_version: str | None = None
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def retrain(self) -> bool:
        """Whether any rule fired."""
        return any(rule.fired for rule in self.rules)

    def to_json(self) -> dict[str, Any]:
        """The run as one JSON document."""
        return {
            "retrain": self.retrain,
            "dry_run": self.dry_run,
            "fired": [rule.name for rule in self.rules if rule.fired],
            "rules": [rule.to_json() for rule in self.rules],
            "champion": self.champion,
            "version": self.version,
            "data_version": self.data_version,
            "outcome": self.outcome,
            "reason": self.reason,
            "rows": self.rows,
            "monitoring": self.monitoring,
        }


def run_loop(
    settings: Settings, spec: DatasetSpec, *, dry_run: bool = False, now: datetime | None = None
) -> LoopResult:
    """One turn of the loop; with `dry_run`, decide and report but train nothing."""
    from churn_mlops.models.registry import Registry
    from churn_mlops.monitoring.job import run_monitor

    now = now or datetime.now(UTC)
    store = MonitorStore(settings.serving_database_url)
    try:
        with store.errors(), store.lock(LOCK, LOCK_TTL):
            monitored = run_monitor(settings, spec, now=now)
            registry = Registry.from_settings(settings)
            champion = registry.champion()
            if champion is None:
                raise ModelNotFoundError("there is no champion to watch yet: run `churn pipeline run` first")
            rules = decide(_evidence(store, champion, settings), settings.loop, now)
            result = LoopResult(champion.version, rules, dry_run, _summary(monitored))
            _act(result, store, registry, champion, spec, settings)
    finally:
        store.close()
    if result.retrain and not dry_run:
        _audit(result, settings)
    return result


def _act(
    result: LoopResult,
    store: MonitorStore,
    registry: Registry,
    champion: VersionInfo,
    spec: DatasetSpec,
    settings: Settings,
) -> None:
    fired = [rule.name for rule in result.rules if rule.fired]
    if not fired:
        result.reason = "no retraining rule fired"
    elif result.dry_run:
        result.reason = f"dry run: {', '.join(fired)} fired; nothing was trained"
    else:
        _retrain(result, store, registry, champion, spec, settings)


def _retrain(
    result: LoopResult,
    store: MonitorStore,
    registry: Registry,
    champion: VersionInfo,
    spec: DatasetSpec,
    settings: Settings,
) -> None:
    from churn_mlops.data.ingest import ingest
    from churn_mlops.data.lake import Lake
    from churn_mlops.data.sources import Source
    from churn_mlops.loop.data import combine, labelled_customers
    from churn_mlops.monitoring.runs import record_ingest
    from churn_mlops.pipeline.training import train_and_register

    lake = Lake(settings.lake_dir)
    new = labelled_customers(store, spec, settings)
    old = _training_rows(lake, champion, spec) if settings.loop.keep_training_data else None
    rows = combine(new, old, spec) if new.height else pl.DataFrame()
    result.rows = {"labelled": new.height, "kept": rows.height - new.height if rows.height else 0}
    if rows.height == 0:
        result.reason = "no customer has an outcome to learn from yet (churn labels ingest)"
        return
    staged = settings.home / "loop" / f"training-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.parquet"
    staged.parent.mkdir(parents=True, exist_ok=True)
    rows.write_parquet(staged)
    try:
        source = Source(str(staged))
        ingested = ingest(source, spec, lake=lake, quarantine_dir=settings.quarantine_dir)
    finally:
        staged.unlink(missing_ok=True)
    assert ingested.version is not None  # ingest raises rather than store nothing
    record_ingest(settings, ingested, "loop: labelled customers and the champion's training rows")
    result.data_version = ingested.version.manifest.version
    done = [v.version for v in registry.versions() if v.tags.get("data_version") == result.data_version]
    if done:
        result.version = done[-1]
        result.reason = f"version {done[-1]} was already trained on data version {result.data_version}"
        return
    outcome = train_and_register(lake.read(ingested.version), ingested.version, spec, settings)
    result.version = outcome.version.version
    result.outcome = PROMOTED if outcome.decision.promote else REJECTED
    result.reason = outcome.decision.reason


def _training_rows(lake: Lake, champion: VersionInfo, spec: DatasetSpec) -> pl.DataFrame | None:
    """The rows the champion was trained on: its lake version, each customer's newest snapshot."""
    data_version = champion.tags.get("data_version")
    if not data_version:
        return None
    try:
        return newest_snapshots(lake.read(lake.get(data_version)), spec)
    except Exception as exc:  # a lake moved or pruned costs the old rows, not the run
        logger.warning("the champion's training rows (data version %s) cannot be read: %s", data_version, exc)
        return None


def _evidence(store: MonitorStore, champion: VersionInfo, settings: Settings) -> Evidence:
    w = tables.windows
    query = (
        sa.select(w.c.result)
        .where(w.c.kind == "1d", w.c.model_version == champion.version)
        .order_by(w.c.start_day)
    )
    trained_at = datetime.fromisoformat(champion.created_at)
    with store.engine.connect() as connection:
        windows = [json.loads(text) for text in connection.scalars(query)]
        new_labels = connection.scalar(
            sa.select(sa.func.count()).where(tables.labels.c.ingested_at > trained_at.isoformat())
        )
    return Evidence(
        champion=champion.version,
        trained_at=trained_at,
        test_roc_auc=champion.metrics.get("roc_auc"),
        windows=[window for window in windows if window.get("complete")],
        new_labels=int(new_labels or 0),
        min_window_rows=settings.monitoring.min_window_rows,
    )


def _summary(monitored: dict[str, Any]) -> dict[str, Any]:
    return {
        "predictions_read": monitored["predictions_read"],
        "windows": len(monitored["windows"]),
        "alerts": len(monitored["alerts"]),
    }


def _audit(result: LoopResult, settings: Settings) -> None:
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": settings.registry.model_name,
        "version": result.version or result.champion,
        "action": f"loop: {result.outcome}",
        "by": "loop",
        "reason": result.reason,
        "rules": [rule.name for rule in result.rules if rule.fired],
        "data_version": result.data_version,
    }
    settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
    with settings.audit_log.open("a") as file:
        file.write(json.dumps(record) + "\n")
