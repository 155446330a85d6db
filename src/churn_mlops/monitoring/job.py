"""The monitoring job: profile new predictions, compute due windows, fire and send alerts.

`run_monitor` is idempotent: the prediction log is read from a watermark (each row once, its
counts added to its day's profile), and a window is computed again only when what it reads has
changed since (a profile of its days, an outcome it can match; see `windows.due_windows`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, cast

import polars as pl

from churn_mlops.data.spec import DatasetSpec, Kind
from churn_mlops.monitoring import tables
from churn_mlops.monitoring.alerts import alert_json, notify, update_alerts
from churn_mlops.monitoring.canary import judge_canary
from churn_mlops.monitoring.counting import build_profile, slice_keys
from churn_mlops.monitoring.profile import Slices
from churn_mlops.monitoring.reference import Reference
from churn_mlops.monitoring.registry import References
from churn_mlops.monitoring.store import MonitorStore, StoredProfile
from churn_mlops.monitoring.windows import ONLINE, compute_window, due_windows
from churn_mlops.settings import Settings

logger = logging.getLogger(__name__)
WindowKind = Literal["1d", "7d"]
COMMIT_LAG = timedelta(seconds=60)  # PostgreSQL ids are not in commit order: leave recent rows
Advance = Callable[[int], None]


def run_monitor(
    settings: Settings,
    spec: DatasetSpec,
    *,
    kind: WindowKind = "1d",
    until: date | None = None,
    now: datetime | None = None,
    advance: Advance = lambda n: None,
) -> dict[str, Any]:
    """Profile new predictions, compute every due window of `kind`, update and send alerts."""
    now = now or datetime.now(UTC)
    store = MonitorStore(settings.serving_database_url)
    try:
        with store.errors(), store.lock():
            references = References(settings)
            ingested = ingest_predictions(store, references, spec, settings, now, advance)
            windows = [
                compute_window(store, reference, window, settings, now)
                for window in due_windows(store, kind, until or now.date(), settings)
                if (reference := _reference(references, window.model_version)) is not None
            ]
            changed = update_alerts(store, settings, kind, now)
            _log_fired(changed)
            canary = judge_canary(store, settings, now)  # its rollback alert goes out below
            sent = notify(store, settings)
            with store.engine.begin() as connection:
                store.set_state(connection, tables.LAST_RUN, now.isoformat(timespec="seconds"))
    finally:
        store.close()
    return {
        "predictions_read": ingested["rows"],
        "predictions_skipped": ingested["skipped"],
        "windows": windows,
        "alerts": [alert_json(a) for a in changed],
        "notifications": sent,
        "canary": canary,
    }


def ingest_predictions(
    store: MonitorStore,
    references: References,
    spec: DatasetSpec,
    settings: Settings,
    now: datetime,
    advance: Advance,
) -> dict[str, Any]:
    """Add the log's new rows to their days' profiles and keep their scores for the label join."""
    watermark = int(store.get_state(tables.WATERMARK) or 0)
    cutoff = now - (COMMIT_LAG if store.engine.dialect.name != "sqlite" else timedelta(0))
    rows = skipped = 0
    for chunk in store.read_predictions(watermark, settings.monitoring.chunk_rows):
        ready = chunk.filter(pl.col("at").cum_max() < cutoff)  # stop at the first row too recent
        if ready.height == 0:
            break
        profiles, scores, unknown = _profile_chunk(ready, references, spec, settings.training.slices)
        with store.engine.begin() as connection:
            store.add_profiles(profiles, connection)
            store.outcomes.add_scores(scores, connection)
            store.set_state(connection, tables.WATERMARK, str(ready.get_column("id").max()))
            _set_last_prediction(store, connection, ready)
        rows, skipped = rows + ready.height, skipped + unknown
        advance(ready.height)
        if ready.height < chunk.height:
            break
    return {"rows": rows, "skipped": skipped}


def _profile_chunk(
    chunk: pl.DataFrame, references: References, spec: DatasetSpec, slices: Slices
) -> tuple[list[StoredProfile], pl.DataFrame, int]:
    inputs = decode_inputs(chunk.get_column("inputs"), spec)
    frame = pl.concat([chunk.drop("inputs"), inputs], how="horizontal").with_columns(
        day=pl.col("at").dt.date().cast(pl.String)
    )
    profiles, kept, skipped = [], [], 0
    for (day, version), group in frame.group_by("day", "model_version", maintain_order=True):
        reference = references.get(str(version))
        if reference is None:
            skipped += group.height
            continue
        profile = build_profile(group, group["probability"], group["prediction"], reference, slices)
        profiles.append(StoredProfile(str(day), ONLINE, str(version), profile))
        kept.append(group)
    scores = _scores(pl.concat(kept) if kept else frame.clear(), spec.id.name, slices)
    return profiles, scores, skipped


def decode_inputs(inputs: pl.Series, spec: DatasetSpec) -> pl.DataFrame:
    """The canonical columns of logged request bodies (JSON text), typed by the dataset spec."""
    types = {Kind.NUMERIC: pl.Float64(), Kind.BOOLEAN: pl.Boolean(), Kind.CATEGORICAL: pl.String()}
    schema = {spec.id.name: pl.String(), **{c.name: types[c.type] for c in spec.features}}
    if inputs.len() == 0:
        return pl.DataFrame(schema=schema)
    # One newline-delimited document: polars parses it in bulk, 2-3x faster than per-row decoding.
    # A value of another type than the spec's (a spec changed since) reads as missing, so it shows
    # in the data-quality report instead of stopping the job at that row for good.
    lines = inputs.str.join("\n").item().encode()
    return pl.read_ndjson(io.BytesIO(lines), schema=schema, ignore_errors=True)


def _scores(frame: pl.DataFrame, id_column: str, slices: Slices) -> pl.DataFrame:
    """The rows with a customer id, for the label join, with their slice keys as JSON."""
    identified = frame.filter(pl.col(id_column).is_not_null())
    keys = [
        pl.Series(column, values, dtype=pl.String)
        for column, values in slice_keys(identified, slices).items()
    ]
    encoded = (
        pl.select(pl.struct(pl.concat_list(keys).alias("keys")).struct.json_encode()).to_series()
        if keys and identified.height
        else pl.Series([None] * identified.height, dtype=pl.String)
    )
    return identified.select(
        prediction_id=pl.col("id"),
        customer_id=pl.col(id_column),
        at_ms=pl.col("at").dt.epoch("ms"),
        model_version=pl.col("model_version"),
        probability=pl.col("probability"),
        prediction=pl.col("prediction"),
    ).with_columns(slices=encoded)


def _set_last_prediction(store: MonitorStore, connection: Any, chunk: pl.DataFrame) -> None:
    latest = cast(datetime, chunk.get_column("at").max())
    stored = connection.scalar(
        tables.state.select()
        .with_only_columns(tables.state.c.value)
        .where(tables.state.c.name == tables.LAST_PREDICTION)
    )
    value = latest.isoformat(timespec="seconds")
    if stored is None or value > stored:
        store.set_state(connection, tables.LAST_PREDICTION, value)


def _log_fired(changed: list[dict[str, Any]]) -> None:
    """One warning line for the alerts this run fired, counted by rule (each one is logged at INFO)."""
    fired: dict[str, int] = {}
    for alert in changed:
        if alert["state"] == "firing":
            fired[alert["rule"]] = fired.get(alert["rule"], 0) + 1
    if fired:
        counts = ", ".join(f"{rule} x{n}" for rule, n in sorted(fired.items()))
        logger.warning("%d alerts fired: %s (churn alerts list)", sum(fired.values()), counts)


def _reference(references: References, version: str) -> Reference | None:
    reference = references.get(version)
    if reference is None:
        logger.warning("model version %s is not in the registry; its windows are not computed", version)
    return reference
