"""The batch scoring job: resolve the model, pick the engine, write scores, summarise."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from churn_mlops.batch.drain import QuarantineWriter
from churn_mlops.batch.local import Advance, run_local
from churn_mlops.batch.output import ScoreWriter, open_writer
from churn_mlops.batch.scoring import ScoringContext
from churn_mlops.batch.summary import RunTotals
from churn_mlops.data.sources import Source
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.monitoring.runs import BATCH, record_run
from churn_mlops.settings import Settings

if TYPE_CHECKING:
    from churn_mlops.models.artifacts import Predictor
    from churn_mlops.models.registry import Registry

logger = logging.getLogger(__name__)
AT_RISK_ROWS = 50  # customers kept for the dashboard's at-risk panel

Engine = Literal["local", "spark"]


@dataclass(frozen=True)
class BatchRequest:
    """One scoring run, as a user asked for it."""

    source: Source
    target: Source
    model: str = "champion"
    engine: Engine = "local"
    run_date: date | None = None
    top_k: int = 0
    top_output: Path | None = None


def score_customers(
    request: BatchRequest, spec: DatasetSpec, settings: Settings, advance: Advance = lambda n: None
) -> dict[str, Any]:
    """Score the whole source with the chosen model and engine; return the run summary."""
    from churn_mlops.models.registry import Registry
    from churn_mlops.monitoring.registry import References

    registry = Registry.from_settings(settings)
    info, predictor = registry.load(request.model)
    reference = References(settings).get(info.version)
    predictor = predictor.with_threads(settings.batch.num_threads)
    compile_seconds = None
    if request.engine == "local":  # Spark workers compile on their own machines
        predictor, compile_seconds = _with_compiled_trees(predictor, settings)
    scored_at = datetime.now(UTC)
    run_date = request.run_date or scored_at.date()
    context = ScoringContext(
        predictor,
        spec,
        info.version,
        run_date,
        scored_at,
        settings.batch.horizon_months,
        settings.batch.value_column,
        reference,
        settings.training.slices,
        leaders=AT_RISK_ROWS if request.engine == "local" else 0,  # Spark ships back scores only
    )
    totals = RunTotals(top_k=request.top_k or (AT_RISK_ROWS if request.engine == "spark" else 0))
    stamp = scored_at.strftime("%Y%m%dT%H%M%SZ")
    quarantine = QuarantineWriter(settings.quarantine_dir / spec.name / f"batch-{run_date}-{stamp}.parquet")
    writer = open_writer(request.target, run_date)
    try:
        seconds = _run_engine(request, writer, context, registry, settings, totals, quarantine, advance)
    except (
        BaseException
    ):  # drain aborts its own failures; this drops the files of an engine that never drained
        writer.abort()
        quarantine.abort(keep=False)
        raise
    top_path = _write_top(totals, request, settings, run_date)
    profiled = _store_profile(totals, settings, run_date, info.version)
    summary = {
        "engine": request.engine,
        "scorer": totals.scorer(),
        "compile_seconds": compile_seconds,
        "model_version": info.version,
        "run_date": run_date.isoformat(),
        "input": request.source.describe(),
        "output": writer.location,
        "rows_in": totals.rows_in,
        "rows_scored": totals.rows_scored,
        "rows_quarantined": totals.rows_quarantined,
        "seconds": round(seconds, 3),
        "rows_per_s": round(totals.rows_in / seconds) if seconds else None,
        "revenue_at_risk": round(totals.revenue_at_risk, 2),
        "scores": totals.distribution(),
        "quarantine_path": str(quarantine.written) if quarantine.written else None,
        "quarantine_columns": dict(quarantine.columns.most_common(5)),
        "top_path": str(top_path) if top_path else None,
        "monitoring": profiled,
    }
    at_risk = _at_risk(totals, predictor, spec.id.name)
    record_run(settings.serving_database_url, BATCH, spec.name, {**summary, "at_risk": at_risk})
    return summary


def _with_compiled_trees(predictor: Predictor, settings: Settings) -> tuple[Predictor, float | None]:
    """The predictor on compiled trees where batch.compiled allows, and the seconds compiling took."""
    from churn_mlops.models.compiled import cache_dir, with_compiled_trees

    started = time.perf_counter()
    compiled = with_compiled_trees(predictor, settings.batch.compiled, cache_dir(settings.home))
    return compiled, (round(time.perf_counter() - started, 3) if compiled is not predictor else None)


def _at_risk(totals: RunTotals, predictor: Predictor, id_column: str) -> list[dict[str, Any]]:
    """The customers of most revenue at risk, with their three strongest reasons where known."""
    if totals.leaders is not None and totals.leaders.height:
        rows = totals.leaders
        reasons = [[r["feature"] for r in top] for top in predictor.reasons(rows.to_dict(as_series=False), 3)]
    elif totals.top is not None:
        rows, id_column = totals.top.head(AT_RISK_ROWS), "customer_id"
        reasons = [[] for _ in range(rows.height)]
    else:
        return []
    return [
        {
            "customer_id": str(row[id_column]),
            "churn_probability": round(float(row["churn_probability"]), 6),
            "revenue_at_risk": _finite(row["revenue_at_risk"]),
            "risk": row["risk"],
            "reasons": why,
        }
        for row, why in zip(rows.iter_rows(named=True), reasons, strict=True)
    ]


def _finite(value: float | None) -> float | None:
    return round(float(value), 2) if value is not None and math.isfinite(value) else None


def _run_engine(
    request: BatchRequest,
    writer: ScoreWriter,
    context: ScoringContext,
    registry: Registry,
    settings: Settings,
    totals: RunTotals,
    quarantine: QuarantineWriter,
    advance: Advance,
) -> float:
    if request.engine == "spark":
        from churn_mlops.batch.spark import run_spark

        return run_spark(
            request.source,
            writer,
            context,
            registry=registry,
            settings=settings,
            totals=totals,
            quarantine=quarantine,
        )
    return run_local(
        request.source,
        writer,
        context,
        batch_rows=settings.batch.batch_rows,
        totals=totals,
        quarantine=quarantine,
        advance=advance,
    )


def _store_profile(totals: RunTotals, settings: Settings, run_date: date, version: str) -> str:
    """Keep the run's profile for drift monitoring (as the run date's batch profile); a store that
    cannot take it costs the monitoring, not the scores."""
    from churn_mlops.errors import ChurnError
    from churn_mlops.monitoring.store import MonitorStore, StoredProfile

    if totals.profile is None:
        return "not profiled: the model version has no reference profile"
    try:
        store = MonitorStore(settings.serving_database_url)
        try:
            store.replace_profile(StoredProfile(run_date.isoformat(), "batch", version, totals.profile))
        finally:
            store.close()
    except ChurnError as exc:
        logger.warning("batch run not profiled for monitoring: %s", exc)
        return f"not profiled: {exc}"
    return f"profiled as the batch profile of {run_date.isoformat()}"


def _write_top(totals: RunTotals, request: BatchRequest, settings: Settings, run_date: date) -> Path | None:
    if not request.top_k or totals.top is None:
        return None
    path = request.top_output or settings.home / "batch" / run_date.isoformat() / f"top_{request.top_k}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    totals.top.head(request.top_k).write_csv(path)
    return path
