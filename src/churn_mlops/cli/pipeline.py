"""`churn pipeline`: the main job, end to end on the embedded default."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from churn_mlops.cli.data import (
    JsonOption,
    QueryOption,
    SpecOption,
    TableOption,
    dataset_spec_from,
    show_ingest,
)
from churn_mlops.cli.output import ChurnGroup, err, print_json, progress, status
from churn_mlops.cli.serve import run_server
from churn_mlops.cli.train import SeedOption, TrialsOption, TuneOption, run_training, show_training, with_seed
from churn_mlops.data.ingest import ingest
from churn_mlops.data.lake import Lake
from churn_mlops.data.sinks import write_frames
from churn_mlops.data.sources import Source
from churn_mlops.data.spec import DatasetSpec
from churn_mlops.data.synthetic import generate
from churn_mlops.settings import Settings, get_settings

app = typer.Typer(cls=ChurnGroup, help="The main job, end to end.", no_args_is_help=True)
DEMO_ROWS = 7043


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
    port: Annotated[int | None, typer.Option(help="Port for --serve (default from settings: 8000).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest and validate customer data, train, evaluate, register and gate a model; then serve it."""
    settings = with_seed(get_settings(), seed)
    dataset_spec = dataset_spec_from(spec)
    origin = Source(source, table_name, query) if source else _demo_database(settings)
    with status(f"ingesting {origin.describe()}"):
        ingested = ingest(
            origin, dataset_spec, lake=Lake(settings.lake_dir), quarantine_dir=settings.quarantine_dir
        )
    assert ingested.version is not None
    if not as_json:
        show_ingest(ingested, as_json=False)
    frame = Lake(settings.lake_dir).read(ingested.version)
    training = run_training(frame, ingested.version, dataset_spec, settings, trials if tune else 0)
    if as_json:
        print_json({"ingest": ingested.summary(), "training": training})
    else:
        show_training(training, as_json=False)
    if serve:
        _serve(settings, dataset_spec, port or settings.serving.port)


def _serve(settings: Settings, spec: DatasetSpec, port: int) -> None:
    """Start the server on the champion, after printing a fresh demo key and a curl to try."""
    from churn_mlops.serving.keys import KeyStore
    from churn_mlops.serving.schemas import example_customer

    host = settings.serving.host
    store = KeyStore(settings.serving_database_url)
    if any(k.name == "demo" and not k.revoked for k in store.list()):
        store.revoke("demo")
    key, _ = store.create("demo", ["predict", "admin"])
    body = json.dumps(example_customer(spec))
    typer.echo(f"\nModel server: http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    typer.echo(f"API key (scopes predict, admin; shown once): {key}")
    typer.echo("Try it:")
    typer.echo(
        f"  curl -s http://{host}:{port}/predict -H 'Content-Type: application/json' \\\n"
        f"    -H 'X-API-Key: {key}' -d '{body}'\n",
        nl=True,
    )
    run_server(settings, host, port, settings.serving.workers)


def _demo_database(settings: Settings) -> Source:
    """The demo's customer database: a SQLite file of synthetic customers, made once."""
    path = settings.demo_dir / "customers.db"
    demo = Source(f"sqlite:///{path}", table="customers")
    if not path.exists():
        err.print(f"creating the demo customer database {path}")
        with progress("generating customers", total=DEMO_ROWS) as advance:
            write_frames(generate(DEMO_ROWS, seed=0), demo, progress=advance)
    return demo
