"""`churn features`: register the feature definitions and load the online store from the lake."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from churn_mlops.cli.options import JsonOption, SpecOption, dataset_spec_from
from churn_mlops.cli.output import ChurnGroup, print_json, status, table
from churn_mlops.settings import get_settings

if TYPE_CHECKING:
    from churn_mlops.featurestore.materialize import Applied

app = typer.Typer(
    cls=ChurnGroup,
    help="The feature store (Feast): customer features by id, from the lake.",
    no_args_is_help=True,
)
VersionOption = Annotated[
    str, typer.Option("--version", help="Lake version to load (id, prefix or 'latest').")
]


def moment(text: str | None, option: str) -> datetime | None:
    """An ISO date or date-time option as an aware UTC datetime (a date means its 00:00 UTC)."""
    from churn_mlops.data.timestamps import parse_date

    if text is None:
        return None
    try:
        return parse_date(text)
    except ValueError as exc:
        message = f"{text!r} is not a date or date-time like 2026-11-29 or 2026-11-29T12:00:00Z"
        raise typer.BadParameter(message, param_hint=option) from exc


@app.command("apply")
def apply_command(
    version: VersionOption = "latest", spec: SpecOption = None, as_json: JsonOption = False
) -> None:
    """Register the customer entity and the `customers` feature view over a lake version."""
    from churn_mlops.data.lake import Lake
    from churn_mlops.featurestore.config import require_feast

    require_feast()
    from churn_mlops.featurestore.materialize import apply_version

    settings, dataset_spec = get_settings(), dataset_spec_from(spec)
    found = Lake(settings.lake_dir).get(version, dataset=dataset_spec.name)
    with status("applying the feature definitions"):
        applied = apply_version(settings, dataset_spec, found)
    _show(applied, "Feature definitions applied", as_json)


@app.command("materialize")
def materialize_command(
    version: VersionOption = "latest",
    until: Annotated[
        str | None,
        typer.Option(help="Load snapshots up to this ISO date or date-time (default: now)."),
    ] = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load each customer's newest snapshot of a lake version into the online store."""
    from churn_mlops.data.lake import Lake
    from churn_mlops.featurestore.config import require_feast

    end = moment(until, "--until")
    require_feast()
    from churn_mlops.featurestore.materialize import materialize

    settings, dataset_spec = get_settings(), dataset_spec_from(spec)
    found = Lake(settings.lake_dir).get(version, dataset=dataset_spec.name)
    with status("materializing") as step:
        loaded = materialize(settings, dataset_spec, found, until=end, step=step)
    _show(loaded, "Online store loaded", as_json)


def _show(result: Applied, title: str, as_json: bool) -> None:
    summary = result.summary()
    if as_json:
        print_json(summary)
        return
    table(title, ["", ""], [(key.replace("_", " "), value) for key, value in summary.items()])
