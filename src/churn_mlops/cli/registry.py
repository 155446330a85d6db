"""`churn registry`: list, show, promote and roll back model versions."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from churn_mlops.cli.options import JsonOption
from churn_mlops.cli.output import ChurnGroup, print_json, table
from churn_mlops.settings import get_settings

if TYPE_CHECKING:
    from churn_mlops.models.gate import Decision
    from churn_mlops.models.registry import Registry

app = typer.Typer(
    cls=ChurnGroup, help="Model versions: list, show, promote, roll back.", no_args_is_help=True
)
Reference = Annotated[str, typer.Argument(help="Version number, or an alias: champion, challenger, latest.")]


def open_registry() -> Registry:
    """The registry named by the settings."""
    from churn_mlops.models.registry import Registry

    settings = get_settings()
    return Registry.from_settings(settings)


@app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """List the registered versions with their aliases and test metrics."""
    versions = open_registry().versions()
    if as_json:
        print_json([v.to_json() for v in versions])
        return
    rows = [
        (
            v.version,
            ", ".join(v.aliases),
            _metric(v.metrics, "roc_auc"),
            _metric(v.metrics, "pr_auc"),
            v.tags.get("data_version", ""),
            v.tags.get("gate.outcome", ""),
            v.created_at,
        )
        for v in versions
    ]
    table("Model versions", ["version", "aliases", "ROC AUC", "PR AUC", "data", "gate", "created"], rows)


@app.command("show")
def show_command(reference: Reference = "champion", as_json: JsonOption = False) -> None:
    """Show one version: lineage, metrics and the last decision about it."""
    document = open_registry().resolve(reference).to_json()
    if as_json:
        print_json(document)
        return
    rows = [(k, v) for k, v in document.items() if k not in {"metrics", "decision"}]
    rows += [(f"test {k}", f"{v:.4f}") for k, v in document["metrics"].items()]
    if document["decision"]:
        rows.append(("last decision", f"{document['decision']['action']}: {document['decision']['reason']}"))
    table(f"{document['name']} v{document['version']}", ["", ""], rows)


@app.command("promote")
def promote_command(
    reference: Reference,
    force: Annotated[bool, typer.Option(help="Promote even below the metric floors.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Make a version the champion by hand (recorded with your user name)."""
    from churn_mlops.pipeline.promotion import promote

    decision = promote(open_registry(), reference, get_settings(), actor=actor(), force=force)
    _show(decision, as_json)


@app.command("rollback")
def rollback_command(as_json: JsonOption = False) -> None:
    """Make the previous champion the champion again."""
    from churn_mlops.pipeline.promotion import rollback

    _show(rollback(open_registry(), get_settings(), actor=actor()), as_json)


def _show(decision: Decision, as_json: bool) -> None:
    champion = open_registry().champion()
    document: dict[str, Any] = {**decision.to_json(), "champion": champion.version if champion else None}
    if as_json:
        print_json(document)
    else:
        typer.echo(f"{decision.reason}; champion is now v{document['champion']}")


def actor() -> str:
    """Who runs this command, as the audit trail records people: user:NAME."""
    return f"user:{getpass.getuser()}"


def _metric(metrics: dict[str, float], name: str) -> str:
    return f"{metrics[name]:.4f}" if name in metrics else ""
