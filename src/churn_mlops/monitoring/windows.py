"""Windows: which are due, and the drift, quality and performance of one, stored with its result.

A window is whole UTC days (`1d`) or a week from Monday (`7d`) for one model version. Its
result is computed from the stored day profiles and the label join, never the raw log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from churn_mlops.models.economics import BusinessCosts
from churn_mlops.monitoring.drift import drift_report, quality_report
from churn_mlops.monitoring.histograms import distributions
from churn_mlops.monitoring.performance import ClassCounts, add_by_slice, expected_counts, metrics
from churn_mlops.monitoring.profile import Profile, total
from churn_mlops.monitoring.reference import Reference
from churn_mlops.monitoring.store import MonitorStore
from churn_mlops.monitoring.tables import now_text
from churn_mlops.settings import Settings

ONLINE = "online"
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Window:
    """A window of whole UTC days for one model version."""

    kind: str
    start: date
    end: date
    model_version: str

    @property
    def start_ms(self) -> int:
        """The start as epoch milliseconds."""
        return _ms(self.start)

    @property
    def end_ms(self) -> int:
        """The end (exclusive) as epoch milliseconds."""
        return _ms(self.end)


def due_windows(store: MonitorStore, kind: str, until: date, settings: Settings) -> list[Window]:
    """Windows up to `until` never computed, or whose inputs changed since they were: a day's
    profile updated (new predictions, a batch run), or an outcome stored that the label join can
    match to one of their predictions (observed before the window's end plus the horizon)."""
    horizon_ms = int(settings.monitoring.label_horizon_days * DAY_MS)
    computed = {(w["start_day"], w["model_version"]): w["computed_at"] for w in store.windows(kind)}
    planned: dict[tuple[date, str], tuple[Window, str]] = {}
    for day_text, version, updated in store.profile_days():
        day = date.fromisoformat(day_text)
        if day > until:
            continue
        start = day if kind == "1d" else day - timedelta(days=day.weekday())
        window = Window(kind, start, start + timedelta(days=1 if kind == "1d" else 7), version)
        latest = max(updated, planned[(start, version)][1]) if (start, version) in planned else updated
        planned[(start, version)] = (window, latest)
    due = []
    for window, updated in (planned[key] for key in sorted(planned)):
        stamp = computed.get((window.start.isoformat(), window.model_version))
        if (
            stamp is None
            or updated > stamp
            or store.outcomes.labels_since(stamp, window.start_ms, window.end_ms + horizon_ms)
        ):
            due.append(window)
    return due


def compute_window(
    store: MonitorStore, reference: Reference, window: Window, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Drift, data quality and performance of one window; stored and returned."""
    stored = [
        p
        for p in store.profiles(window.start.isoformat(), window.end.isoformat())
        if p.model_version == window.model_version
    ]
    profile = total((p.profile for p in stored), reference)
    sources: dict[str, int] = {}
    for p in stored:
        sources[p.source] = sources.get(p.source, 0) + p.profile.rows
    result = {
        "kind": window.kind,
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "model_version": window.model_version,
        "complete": _at(window.end) <= now,
        "predictions": profile.rows,
        "sources": sources,
        "drift": drift_report(profile, reference, settings.monitoring.drift),
        "quality": quality_report(profile, reference),
        "performance": _performance(store, window, profile, reference, settings, now),
        "distributions": distributions(profile, reference),
    }
    _save(store, result, now)
    return result


def _performance(
    store: MonitorStore,
    window: Window,
    profile: Profile,
    reference: Reference,
    settings: Settings,
    now: datetime,
) -> dict[str, Any]:
    monitoring, training = settings.monitoring, settings.training
    costs = BusinessCosts(training.offer_cost, training.saved_value, training.success_rate)
    horizon_ms = int(monitoring.label_horizon_days * DAY_MS)
    counts, by_slice = ClassCounts.empty(), dict[str, ClassCounts]()
    for batch in store.outcomes.labelled(
        window.model_version, window.start_ms, window.end_ms, horizon_ms, monitoring.chunk_rows
    ):
        counts.add(batch.probabilities, batch.decisions, batch.outcomes)
        add_by_slice(by_slice, batch.slices, batch.probabilities, batch.decisions, batch.outcomes)
    due = _at(window.end) + timedelta(days=monitoring.label_horizon_days) <= now
    identified = store.outcomes.scored(window.model_version, window.start_ms, window.end_ms)
    return {
        "labels": int(counts.total),
        "with_customer_id": identified,  # only these can be matched with an outcome
        "coverage": counts.total / identified if identified else None,
        "labels_due": due,
        "test": {k: reference.test_metrics.get(k) for k in ("roc_auc", "pr_auc", "precision", "recall")},
        "realised": metrics(counts, costs),
        "estimated": metrics(expected_counts(profile), costs),
        "slices": [
            {
                "slice": key,
                "predictions": int(scored.decisions.sum()),
                "labels": int(by_slice[key].total) if key in by_slice else 0,
                "realised": metrics(by_slice[key], costs) if key in by_slice else None,
                "estimated": metrics(expected_counts(scored), costs),
            }
            for key, scored in sorted(profile.slices.items())
        ],
    }


def _save(store: MonitorStore, result: dict[str, Any], now: datetime) -> None:
    realised = result["performance"]["realised"] or {}
    estimated = result["performance"]["estimated"] or {}
    row = {
        "kind": result["kind"],
        "start_day": result["start"],
        "end_day": result["end"],
        "model_version": result["model_version"],
        "predictions": result["predictions"],
        "drift_share": result["drift"]["share"],
        "drifted": result["drift"]["drifted"],
        "realised_roc_auc": realised.get("roc_auc"),
        "estimated_roc_auc": estimated.get("roc_auc"),
        "coverage": result["performance"]["coverage"],
        "result": json.dumps(result),
        "computed_at": now_text(),  # the clock the profiles' and labels' stamps use
    }
    with store.engine.begin() as connection:
        store.save_window(row, connection)


def window_metrics(result: dict[str, Any]) -> dict[str, float | None]:
    """The flat metrics of a window that alert rules name (`drift.share`, `realised.roc_auc`, ...)."""
    drift, performance = result["drift"], result["performance"]
    values: dict[str, float | None] = {
        "drift.share": drift["share"],
        "drift.score": drift["score"]["value"],
        "drift.score.drifted": float(drift["score"]["drifted"]),
        "predictions": result["predictions"],
        "labels.coverage": performance["coverage"],
        "labels.coverage_due": performance["coverage"] if performance["labels_due"] else None,
    }
    for feature in drift["features"]:
        for stat in ("psi", "js"):
            values[f"drift.features.{feature['feature']}.{stat}"] = feature.get(stat)
        values[f"drift.features.{feature['feature']}.drifted"] = float(feature["drifted"])
    test_auc = performance["test"].get("roc_auc")
    for source in ("realised", "estimated"):
        figures = performance[source] or {}
        for name, value in figures.items():
            values[f"{source}.{name}"] = value
        auc = figures.get("roc_auc")
        values[f"{source}.roc_auc_drop"] = (
            test_auc - auc if auc is not None and test_auc is not None else None
        )
    quality = result["quality"]
    values["quality.missing"] = max(quality["missing"].values(), default=0.0)
    values["quality.unknown_category"] = max(quality["unknown_category"].values(), default=0.0)
    values["quality.out_of_range"] = max(quality["out_of_range"].values(), default=0.0)
    return values


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _ms(day: date) -> int:
    return int(_at(day).timestamp() * 1000)
