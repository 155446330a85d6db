"""`churn pipeline`: the main job, end to end on the embedded default."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Annotated

import typer

from churn_mlops.cli.data import show_ingest
from churn_mlops.cli.options import (
    JsonOption,
    PortOption,
    QueryOption,
    SeedOption,
    SpecOption,
    TableOption,
    TrialsOption,
    TuneOption,
    dataset_spec_from,
)
from churn_mlops.cli.output import ChurnGroup, err, print_json, progress, status
from churn_mlops.cli.serve import run_server
from churn_mlops.cli.train import show_training, with_seed
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.settings import Settings, get_settings

if TYPE_CHECKING:
    from churn_mlops.data.ingest import IngestResult

app = typer.Typer(cls=ChurnGroup, help="The main job, end to end.", no_args_is_help=True)


@app.command("run")
def run_command(
    source: Annotated[
        str | None,
        typer.Option("--source", "-s", help="Customer data (default: the demo customer database)."),
    ] = None,
    table_name: TableOption = None,
    query: QueryOption = None,
    spec: SpecOption = None,
    tune: TuneOption = False,
    trials: TrialsOption = 20,
    seed: SeedOption = None,
    serve: Annotated[bool, typer.Option("--serve", help="Finish by serving the champion (blocks).")] = False,
    port: PortOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest and validate customer data, train, evaluate, register and gate a model; then serve it."""
    from churn_mlops.data.sources import Source
    from churn_mlops.pipeline.main_job import run_main_job

    settings = with_seed(get_settings(), seed)
    dataset_spec = dataset_spec_from(spec)
    result = run_main_job(
        settings,
        dataset_spec,
        Source(source, table_name, query) if source else None,
        trials=trials if tune else 0,
        issue_key=serve,
        reporter=TerminalReporter(as_json),
    )
    if as_json:
        print_json(result.summary())
    else:
        show_training(result.training, as_json=False)
    if result.demo_key is not None:
        port = port or settings.serving.port
        _show_try_it(settings, dataset_spec, port, result.demo_key)
        run_server(settings, settings.serving.host, port, settings.serving.workers)


class TerminalReporter:
    """The main job's progress as spinners and bars on stderr, and its ingestion report as it lands."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def notice(self, message: str) -> None:
        """One line on stderr."""
        err.print(message)

    def stage(self, message: str) -> AbstractContextManager[Callable[[str], None]]:
        """A spinner."""
        return status(message)

    def count(self, message: str, total: int) -> AbstractContextManager[Callable[[int], None]]:
        """A progress bar."""
        return progress(message, total)

    def ingested(self, result: IngestResult) -> None:
        """The validation report, before training starts (JSON comes at the end, in one document)."""
        if not self.as_json:
            show_ingest(result, as_json=False)


def _show_try_it(settings: Settings, spec: DatasetSpec, port: int, key: str) -> None:
    """The server's address, the demo key and a curl to paste."""
    from churn_mlops.dashboard.links import sign_in_link
    from churn_mlops.serving.schemas import example_customer

    host = settings.serving.host
    body = shlex.quote(json.dumps(example_customer(spec)))
    typer.echo(f"\nModel server: http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    typer.echo(f"API key (scopes predict, admin, view; shown once): {key}")
    typer.echo(f"Dashboard (a one-time sign-in link): {sign_in_link(settings, port=port)}")
    typer.echo("Try it:")
    typer.echo(
        f"  curl -s http://{host}:{port}/predict -H 'Content-Type: application/json' \\\n"
        f"    -H 'X-API-Key: {key}' -d {body}\n"
    )
