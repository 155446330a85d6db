"""`churn rollout`: try a model on live traffic before it takes over (shadow mode)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from churn_mlops.cli.options import JsonOption
from churn_mlops.cli.output import ChurnGroup, err, print_json, table
from churn_mlops.cli.registry import actor
from churn_mlops.settings import get_settings

FIGURES = ("mean_probability", "decision_rate", "agreement", "mean_abs_difference")
app = typer.Typer(cls=ChurnGroup, help="Rollouts: shadow a model on live traffic.", no_args_is_help=True)


@app.command("start")
def start_command(
    mode: Annotated[
        Literal["shadow"],
        typer.Option("--mode", help="shadow: the champion answers; the model is scored beside it."),
    ] = "shadow",
    model: Annotated[str, typer.Option("--model", help="Version or alias to try.")] = "challenger",
    as_json: JsonOption = False,
) -> None:
    """Start a rollout; every server follows within seconds, with no restart."""
    from churn_mlops.pipeline.rollout import start_rollout

    started = start_rollout(get_settings(), model=model, actor=actor())
    if as_json:
        print_json(started)
        return
    err.print(
        f"shadowing champion v{started['champion_version']} with v{started['model_version']}: "
        "the champion answers every request; `churn rollout status` compares them",
        highlight=False,
    )


@app.command("status")
def status_command(as_json: JsonOption = False) -> None:
    """The rollout in force (or the last one) and how its model compares with the champion."""
    from churn_mlops.pipeline.rollout import rollout_status

    found = rollout_status(get_settings())
    if as_json:
        print_json(found)
        return
    if found["rollout"] is None:
        err.print("no rollout has run yet: `churn rollout start --mode shadow`", highlight=False)
        return
    rollout = found["rollout"]
    state = "running" if found["running"] else f"ended {rollout['ended_at']} ({rollout['reason']})"
    err.print(
        f"{rollout['mode']} of v{rollout['model_version']} since {rollout['started_at']}: {state}",
        highlight=False,
    )
    rows = [
        [name, f"v{m['version']}", m["requests"], *(_round(m.get(k)) for k in FIGURES)]
        for name, m in found["models"].items()
    ]
    columns = [
        "model",
        "version",
        "requests",
        "mean probability",
        "decision rate",
        "agreement",
        "mean |diff|",
    ]
    table("Rollout", columns, rows)


@app.command("stop")
def stop_command(as_json: JsonOption = False) -> None:
    """End the rollout; the champion keeps all traffic."""
    from churn_mlops.pipeline.rollout import stop_rollout

    stopped = stop_rollout(get_settings(), actor=actor())
    if as_json:
        print_json(stopped)
        return
    err.print(f"stopped the {stopped['mode']} of v{stopped['model_version']}", highlight=False)


def _round(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
