"""The `churn` command line: one subcommand per job, thin wrappers over library functions."""

from __future__ import annotations

import logging
import os

import typer

from churn_mlops.cli import batch, dashboard, data, features, keys, loop, monitor, pipeline, registry, rollout
from churn_mlops.cli.output import ChurnGroup
from churn_mlops.cli.serve import serve_command
from churn_mlops.cli.train import train_command
from churn_mlops.runtime import passive_openmp_waits

app = typer.Typer(
    cls=ChurnGroup,
    help="churn-mlops: customer churn prediction, from data to dashboard.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(registry.app, name="registry")
app.add_typer(keys.app, name="keys")
app.add_typer(batch.app, name="batch")
app.add_typer(monitor.monitor_app, name="monitor")
app.add_typer(monitor.alerts_app, name="alerts")
app.add_typer(monitor.labels_app, name="labels")
app.add_typer(dashboard.app, name="dashboard")
app.add_typer(loop.app, name="loop")
app.add_typer(rollout.app, name="rollout")
app.add_typer(features.app, name="features")
app.command("simulate")(monitor.simulate_command)
app.command("serve")(serve_command)
app.command("train")(train_command)


@app.callback()
def _configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail.")) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", logging.getLevelName(level))
    for noisy in ("alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(level)
    for leaky in ("httpx", "httpcore"):  # their debug lines carry whole URLs, webhook secrets included
        logging.getLogger(leaky).setLevel(max(level, logging.WARNING))


def main() -> None:
    """Entry point of the `churn` console script."""
    passive_openmp_waits()
    app()
