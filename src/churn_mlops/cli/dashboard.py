"""`churn dashboard`: sign-in links to the web dashboard the model server serves at /dashboard."""

from __future__ import annotations

from typing import Annotated

import typer

from churn_mlops.cli.options import JsonOption
from churn_mlops.cli.output import ChurnGroup, err, print_json
from churn_mlops.settings import get_settings

app = typer.Typer(cls=ChurnGroup, help="The web dashboard: sign-in links.", no_args_is_help=True)


@app.command("link")
def link_command(
    ttl: Annotated[
        int | None,
        typer.Option(
            "--ttl", min=10, max=86_400, help="Seconds the link works (default dashboard.link_ttl_seconds)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print a one-time sign-in URL: opening it signs the browser in and shows the dashboard."""
    from churn_mlops.dashboard.links import sign_in_link

    settings = get_settings()
    url = sign_in_link(settings, ttl)
    if as_json:
        print_json({"url": url, "ttl_seconds": ttl or settings.dashboard.link_ttl_seconds})
        return
    err.print("open this once, before it expires; it signs the browser in", highlight=False)
    typer.echo(url)
