"""`churn rollout`: try a model on live traffic before it takes over (shadow or canary)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from churn_mlops.cli.options import JsonOption
from churn_mlops.cli.output import ChurnGroup, err, print_json, table
from churn_mlops.cli.registry import actor
from churn_mlops.settings import get_settings

FIGURES = (
    "mean_probability",
    "decision_rate",
    "p99_ms",
    "agreement",
    "mean_abs_difference",
    "realised_roc_auc",
    "labelled",
)
app = typer.Typer(
    cls=ChurnGroup,
    help="Rollouts: shadow a model, or let it answer a share of customers.",
    no_args_is_help=True,
)


@app.command("start")
def start_command(
    mode: Annotated[
        Literal["shadow", "canary"],
        typer.Option(
            "--mode",
            help="shadow: the champion answers, the model is scored beside it; "
            "canary: the model answers --fraction of the customers (stable by customer id).",
        ),
    ] = "shadow",
    model: Annotated[str, typer.Option("--model", help="Version or alias to try.")] = "challenger",
    fraction: Annotated[
        float, typer.Option("--fraction", min=0.0, max=1.0, help="The canary's share of customers.")
    ] = 0.1,
    as_json: JsonOption = False,
) -> None:
    """Start a rollout; every server follows within seconds, with no restart."""
    from churn_mlops.pipeline.rollout import start_rollout

    started = start_rollout(get_settings(), mode=mode, model=model, fraction=fraction, actor=actor())
    if as_json:
        print_json(started)
        return
    tried, champion = f"v{started['model_version']}", f"v{started['champion_version']}"
    what = (
        f"shadowing champion {champion} with {tried}: the champion answers"
        if mode == "shadow"
        else f"{tried} answers {fraction:.0%} of customers, {champion} the rest"
    )
    err.print(f"{what}; `churn rollout status` compares them", highlight=False)


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
        [name, f"v{m['version']}", m["requests"], m.get("errors", "-"), *(_round(m.get(k)) for k in FIGURES)]
        for name, m in found["models"].items()
    ]
    columns = [
        "model",
        "version",
        "requests",
        "errors",
        "mean probability",
        "decision rate",
        "p99 ms",
        "agreement",
        "mean |diff|",
        "realised ROC AUC",
        "labelled",
    ]
    table("Rollout", columns, rows)


@app.command("promote")
def promote_command(as_json: JsonOption = False) -> None:
    """Make the rollout's model the champion (the gate's floors apply) and end the rollout."""
    from churn_mlops.pipeline.rollout import promote_rollout

    promoted = promote_rollout(get_settings(), actor=actor())
    if as_json:
        print_json(promoted)
        return
    err.print(f"v{promoted['model_version']} is the champion: {promoted['reason']}", highlight=False)


@app.command("stop")
def stop_command(as_json: JsonOption = False) -> None:
    """End the rollout; all traffic goes back to the champion."""
    from churn_mlops.pipeline.rollout import stop_rollout

    stopped = stop_rollout(get_settings(), actor=actor())
    if as_json:
        print_json(stopped)
        return
    err.print(f"stopped the {stopped['mode']} of v{stopped['model_version']}", highlight=False)


def _round(value: object) -> str:
    """A count with thousands separators, a figure to four decimals, "-" for none."""
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if isinstance(value, float) else "-"
