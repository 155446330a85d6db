"""`churn loop`: the closed loop from drift to a retrained, gated and promoted model."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from churn_mlops.cli.options import JsonOption, SpecOption, dataset_spec_from
from churn_mlops.cli.output import ChurnGroup, err, print_json, status, table
from churn_mlops.settings import get_settings

app = typer.Typer(
    cls=ChurnGroup, help="The closed loop: monitor, retrain, gate, promote.", no_args_is_help=True
)

# With --detailed-exit-codes: what happened, for scripts. Without, 0 means a decision was made.
DETAILED = {"kept": 0, "promoted": 10, "rejected": 11}
NOTHING_NEW = 12


RUN_HELP = (
    "Run monitoring; if a retraining rule fires, ingest, train, gate and promote.\n\n"
    "The rules (settings loop.*): the drift share of the latest complete day, the realised (else "
    "estimated) ROC AUC below the test figure, the champion's age, and the outcomes that arrived "
    "since it was trained. Servers pick a new champion up by polling (serving.reload_poll_seconds). "
    "Exit 9: another run holds the lock."
)


@app.command("run", help=RUN_HELP)
def run_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and report; train nothing.")] = False,
    detailed_exit_codes: Annotated[
        bool,
        typer.Option(
            "--detailed-exit-codes",
            help="Exit 0 when no rule fired, 10 when a new champion was promoted, 11 when the gate "
            "rejected the retrained model, 12 when rules fired but there was nothing new to train on.",
        ),
    ] = False,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """One turn of the loop, as RUN_HELP says."""
    from churn_mlops.loop.job import run_loop

    settings = get_settings()
    with status("running the loop: monitoring, rules" + ("" if dry_run else ", retraining if they fire")):
        result = run_loop(settings, dataset_spec_from(spec), dry_run=dry_run)
    if as_json:
        print_json(result.to_json())
    else:
        _show(result.to_json())
    if detailed_exit_codes:
        code = (
            NOTHING_NEW
            if result.retrain and result.outcome == "kept" and not dry_run
            else DETAILED[result.outcome]
        )
        raise typer.Exit(code)


@app.command("schedule")
def schedule_command(
    cron: Annotated[str, typer.Option("--cron", help="Five-field cron expression, UTC.")] = "0 3 * * *",
    command: Annotated[
        str,
        typer.Option("--command", help='Another churn command line to run instead, e.g. "monitor run".'),
    ] = "loop run",
) -> None:
    """Run the loop (or --command) on a cron expression, in this process, until Ctrl-C."""
    from churn_mlops.cli import app as churn_app
    from churn_mlops.loop.schedule import check_command, cron_trigger, run_on_schedule

    words = shlex.split(command)
    check_command(typer.main.get_command(churn_app), words)
    cron_trigger(cron)  # a bad expression is refused before anything is said
    err.print(f"running `churn {command}` on {cron!r} (UTC); Ctrl-C stops", highlight=False)
    run_on_schedule(cron, words)


def _show(document: dict[str, object]) -> None:
    rules = document["rules"]
    assert isinstance(rules, list)
    rows = [
        [r["rule"], "fired" if r["fired"] else "-", r["value"], r["threshold"], r["detail"]] for r in rules
    ]
    table("Retraining rules", ["rule", "", "value", "threshold", "detail"], rows)
    version = f" (version {document['version']})" if document.get("version") else ""
    err.print(f"[bold]{document['outcome']}[/]{version}: {document['reason']}", highlight=False)
