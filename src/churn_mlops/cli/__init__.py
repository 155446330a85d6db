"""The `churn` command line: one subcommand per job, thin wrappers over library functions."""

from __future__ import annotations

import logging

import typer

from churn_mlops.cli import data, pipeline
from churn_mlops.cli.output import ChurnGroup

app = typer.Typer(
    cls=ChurnGroup,
    help="churn-mlops: customer churn prediction, from data to dashboard.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(pipeline.app, name="pipeline")


@app.callback()
def _configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def main() -> None:
    """Entry point of the `churn` console script."""
    app()
