"""Job runs for the dashboard's data quality and at-risk panels: each ingest and batch run, summarised.

A run is recorded by the job itself at its end (rows in, valid, quarantined, the main reasons,
and for a batch run its revenue at risk and top customers), so the dashboard reads a few rows
instead of the lake, the quarantine or the scores. A store that cannot take the record costs the
dashboard its row, never the job: the failure is logged and the job's result stands.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from churn_mlops.errors import ChurnError, first_line

if TYPE_CHECKING:
    from churn_mlops.data.ingest import IngestResult
    from churn_mlops.settings import Settings

logger = logging.getLogger(__name__)

INGEST, BATCH = "ingest", "batch"
metadata = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("finished_at", sa.String(32), nullable=False),
    sa.Column("dataset", sa.String(100), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=True),
    sa.Column("rows_in", sa.BigInteger, nullable=False),
    sa.Column("rows_valid", sa.BigInteger, nullable=False),
    sa.Column("rows_quarantined", sa.BigInteger, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
)


def record_run(url: str, kind: str, dataset: str, summary: dict[str, Any]) -> bool:
    """Store one finished run's summary (its `rows_*` counts and `model_version` read from it)."""
    from churn_mlops import migrations
    from churn_mlops.sql import create_engine

    row = {
        "kind": kind,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": dataset,
        "model_version": summary.get("model_version"),
        "rows_in": int(summary.get("rows_in") or 0),
        "rows_valid": int(summary.get("rows_valid", summary.get("rows_scored")) or 0),
        "rows_quarantined": int(summary.get("rows_quarantined") or 0),
        "summary": json.dumps(summary, default=str),
    }
    try:
        engine = create_engine(url, 10.0)
        try:
            migrations.upgrade(engine)
            with engine.begin() as connection:
                connection.execute(job_runs.insert().values(**row))
        finally:
            engine.dispose()
    except (sa.exc.SQLAlchemyError, ChurnError) as exc:
        logger.warning("%s run not recorded for the dashboard: %s", kind, first_line(exc))
        return False
    return True


def record_ingest(settings: Settings, result: IngestResult, source: str) -> bool:
    """Record an ingest run: its source, the lake version it stored, its counts and failure reasons."""
    summary = {"source": source, **result.summary()}
    return record_run(settings.serving_database_url, INGEST, result.report.spec, summary)


def latest_runs(connection: sa.Connection, kind: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest runs first, their summaries decoded."""
    query = sa.select(job_runs).order_by(job_runs.c.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(job_runs.c.kind == kind)
    rows = [dict(r._mapping) for r in connection.execute(query)]
    for row in rows:
        row["summary"] = json.loads(row["summary"])
    return rows
