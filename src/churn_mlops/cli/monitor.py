"""`churn monitor`, `churn alerts`, `churn labels` and `churn simulate`: the monitoring jobs."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer

from churn_mlops.cli.options import (
    CustomerSeedOption,
    JsonOption,
    ModelOption,
    QueryOption,
    SourceOption,
    SpecOption,
    TableOption,
    dataset_spec_from,
    parse_date,
)
from churn_mlops.cli.output import ChurnGroup, print_json, progress, table
from churn_mlops.settings import get_settings


class WindowChoice(StrEnum):
    """Window lengths of `churn monitor run`."""

    DAY = "1d"
    WEEK = "7d"


monitor_app = typer.Typer(
    cls=ChurnGroup, help="Drift, performance and alerts of the served model.", no_args_is_help=True
)
alerts_app = typer.Typer(cls=ChurnGroup, help="Alerts fired by the monitoring rules.", no_args_is_help=True)
labels_app = typer.Typer(
    cls=ChurnGroup, help="Delayed outcomes (did the customer churn?).", no_args_is_help=True
)


@monitor_app.command("run")
def run_command(
    window: Annotated[
        WindowChoice, typer.Option(help="Window length: 1d (UTC days) or 7d (weeks from Monday).")
    ] = WindowChoice.DAY,
    until: Annotated[
        str | None, typer.Option(help="Last day to compute, YYYY-MM-DD (default today, UTC).")
    ] = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Profile new predictions, compute every window not yet computed, fire and send alerts."""
    from churn_mlops.monitoring.job import run_monitor

    with progress("reading the prediction log") as advance:
        summary = run_monitor(
            get_settings(),
            dataset_spec_from(spec),
            kind=window.value,
            until=parse_date(until, "--until"),
            advance=advance,
        )
    if as_json:
        print_json(summary)
        return
    _windows_table(
        summary["windows"], f"Windows computed ({summary['predictions_read']:,} new predictions read)"
    )
    _alert_changes(summary["alerts"])
    _canary_line(summary["canary"])
    sent = summary["notifications"]
    if sent["sent"] or sent["failed"]:
        typer.echo(f"webhooks: {sent['sent']} sent, {sent['failed']} failed (retried next run)", err=True)
    if summary["predictions_skipped"]:
        typer.echo(
            f"{summary['predictions_skipped']:,} predictions of versions missing from the registry skipped",
            err=True,
        )


@monitor_app.command("show")
def show_command(
    window: Annotated[WindowChoice, typer.Option(help="Window length to show.")] = WindowChoice.DAY,
    last: Annotated[int, typer.Option(min=1, help="Show the last N windows.")] = 30,
    as_json: JsonOption = False,
) -> None:
    """The stored results of the latest windows: drift, data quality, realised and estimated performance."""
    from churn_mlops.monitoring.store import MonitorStore
    from churn_mlops.monitoring.tables import LAST_RUN

    store = MonitorStore(get_settings().serving_database_url)
    try:
        with store.errors():
            rows = store.windows(window.value)[-last:]
            last_run = store.get_state(LAST_RUN)
    finally:
        store.close()
    results = [json.loads(r["result"]) | {"computed_at": r["computed_at"]} for r in rows]
    if as_json:
        print_json({"last_run_at": last_run, "windows": results})
        return
    if not results:
        typer.echo(
            "No windows yet: run `churn monitor run` (and `churn simulate` for demo traffic).", err=True
        )
        return
    _windows_table(results, f"Monitoring ({window.value} windows; last run {last_run})")


@alerts_app.command("list")
def list_command(
    state: Annotated[str | None, typer.Option(help="Only alerts in this state: firing or resolved.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Alerts, newest window first."""
    from churn_mlops.monitoring.store import MonitorStore

    if state not in (None, "firing", "resolved"):
        raise typer.BadParameter("use firing or resolved", param_hint="--state")
    store = MonitorStore(get_settings().serving_database_url)
    try:
        with store.errors():
            rows = store.alerts(state)
    finally:
        store.close()
    if as_json:
        print_json({"alerts": rows})
        return
    _alerts_table(rows, "Alerts")


@labels_app.command("ingest")
def ingest_command(
    source: SourceOption,
    table_name: TableOption = None,
    query: QueryOption = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Store outcomes: a customer id, churned (yes/no) and observed_at; bad rows are quarantined."""
    from churn_mlops.data.sources import Source
    from churn_mlops.monitoring.labels import ingest_labels

    summary = ingest_labels(Source(source, table_name, query), dataset_spec_from(spec), get_settings())
    if as_json:
        print_json(summary)
        return
    rows = [(k.replace("_", " "), v) for k, v in summary.items() if v is not None]
    table("Labels", ["", ""], rows)


def simulate_command(
    days: Annotated[int, typer.Option(min=1, max=3650, help="Days of traffic, ending today.")] = 30,
    per_day: Annotated[int, typer.Option(min=1, help="Predictions per day.")] = 5000,
    drift_from_day: Annotated[
        int | None,
        typer.Option(min=0, help="Days as trained before the mix drifts (15: the 16th day drifts first)."),
    ] = None,
    drift: Annotated[
        float,
        typer.Option(min=0, max=1, help="How far the customer mix shifts from --drift-from-day on (0-1)."),
    ] = 0.6,
    label_delay_days: Annotated[
        float, typer.Option(min=0, help="Days from a prediction to its outcome.")
    ] = 7.0,
    seed: CustomerSeedOption = 0,
    model: ModelOption = "champion",
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write back-dated traffic through the champion to the prediction log, and its outcomes as labels."""
    from churn_mlops.monitoring.simulate import simulate

    with progress("simulating traffic", total=days * per_day) as advance:
        summary = simulate(
            get_settings(),
            dataset_spec_from(spec),
            days=days,
            per_day=per_day,
            drift_from_day=drift_from_day,
            drift=drift if drift_from_day is not None else 0.0,
            label_delay_days=label_delay_days,
            seed=seed,
            model=model,
            advance=advance,
        )
    if as_json:
        print_json(summary)
        return
    table("Simulated traffic", ["", ""], [(k.replace("_", " "), v) for k, v in summary.items()])
    typer.echo("Next: churn monitor run", err=True)


def _windows_table(results: list[dict[str, Any]], title: str) -> None:
    rows = []
    for r in results:
        drift, performance = r["drift"], r["performance"]
        realised = (performance["realised"] or {}).get("roc_auc")
        estimated = (performance["estimated"] or {}).get("roc_auc")
        rows.append(
            (
                r["start"],
                r["model_version"],
                r["predictions"],
                _num(drift["share"], 2) + (" DRIFT" if drift["drifted"] else ""),
                ", ".join(drift["drifted_features"]) or "-",
                _num(drift["score"]["value"]),
                _num(realised),
                _num(estimated),
                _num(performance["coverage"]),
            )
        )
    columns = ["window", "model", "predictions", "drift share", "drifted features", "score PSI"]
    table(title, [*columns, "ROC AUC realised", "estimated", "label coverage"], rows)


def _canary_line(canary: dict[str, Any] | None) -> None:
    """The running canary's realised ROC AUC against the champion's, and a rollback if it came to that."""
    if canary is None:
        return
    models = canary["models"]
    figures = ", ".join(
        f"{name} v{m['version']} {_num(m['roc_auc'])} on {m['labelled']:,} labelled"
        for name, m in models.items()
    )
    typer.echo(f"canary, realised ROC AUC: {figures}", err=True)
    if canary["rolled_back"]:
        typer.echo(f"canary v{canary['version']} rolled back: {canary['rolled_back']}", err=True)


def _alert_changes(alerts: list[dict[str, Any]]) -> None:
    """The changed alerts: each one if few, else a count per rule and state."""
    if len(alerts) <= 10:
        _alerts_table(alerts, "Alerts changed")
        return
    counts: dict[tuple[str, str, str], int] = {}
    for alert in alerts:
        key = (alert["state"], alert["severity"], alert["rule"])
        counts[key] = counts.get(key, 0) + 1
    rows = [(*key, n) for key, n in sorted(counts.items())]
    table("Alerts changed (`churn alerts list` shows each)", ["state", "severity", "rule", "windows"], rows)


def _alerts_table(alerts: list[dict[str, Any]], title: str) -> None:
    rows = [
        (
            a["state"],
            a["severity"],
            a["rule"],
            a["window_start" if "window_start" in a else "window"],
            a["message"],
        )
        for a in alerts
    ]
    table(title, ["state", "severity", "rule", "window", "message"], rows)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
