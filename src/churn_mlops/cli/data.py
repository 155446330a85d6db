"""`churn data`: generate, ingest, validate and list customer data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from churn_mlops.cli.options import (
    CustomerSeedOption,
    JsonOption,
    QueryOption,
    SourceOption,
    SpecOption,
    TableOption,
    dataset_spec_from,
)
from churn_mlops.cli.output import ChurnGroup, print_json, progress, status, table
from churn_mlops.settings import get_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    import polars as pl

    from churn_mlops.data.ingest import IngestResult
    from churn_mlops.data.lake import LakeVersion

app = typer.Typer(
    cls=ChurnGroup, help="Customer data: generate, ingest, validate, list.", no_args_is_help=True
)
UnlabelledOption = Annotated[bool, typer.Option(help="Accept data without the target column.")]


@app.command("generate")
def generate_command(
    output: Annotated[
        str, typer.Option("--output", "-o", help="Where to write: .csv, .parquet or a SQLAlchemy URL.")
    ],
    rows: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 7043,
    table_name: Annotated[
        str, typer.Option("--table", help="Table name, for a database output.")
    ] = "customers",
    seed: CustomerSeedOption = 0,
    drift: Annotated[
        float, typer.Option(min=0, max=1, help="Shift the customer mix (0 none, 1 strong).")
    ] = 0.0,
    bad_fraction: Annotated[
        float, typer.Option(min=0, max=1, help="Fraction of rows to break on purpose.")
    ] = 0.0,
    force: Annotated[bool, typer.Option(help="Replace an existing file or table.")] = False,
    days: Annotated[
        int,
        typer.Option(
            min=0,
            help="Write each customer's history over this many days: snapshots with snapshot_at, "
            "and the churn label with churn_observed_at (0: one row per customer, no times).",
        ),
    ] = 0,
    end: Annotated[
        str | None,
        typer.Option(help="With --days: the history ends here (ISO date; default today 00:00 UTC)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write synthetic Telco-schema customers with a realistic churn signal."""
    from churn_mlops.data.sinks import write_frames
    from churn_mlops.data.sources import Source

    target = Source(output, table=table_name)
    if days and (drift or bad_fraction):
        raise typer.BadParameter(
            "--days does not combine with --drift or --bad-fraction", param_hint="--days"
        )
    frames = _customer_frames(rows, seed, drift, bad_fraction, days, end)
    with progress("generating customers" if not days else "generating snapshots") as advance:
        written = write_frames(frames, target, overwrite=force, progress=advance)
    summary = {"rows": written, "customers": rows, "days": days, "output": target.describe(), "seed": seed}
    if as_json:
        print_json(summary | {"drift": drift})
    elif days:
        typer.echo(f"wrote {written} snapshots of {rows} customers over {days} days to {target.describe()}")
    else:
        typer.echo(f"wrote {written} customers to {target.describe()}")


def _customer_frames(
    rows: int, seed: int, drift: float, bad_fraction: float, days: int, end: str | None
) -> Iterator[pl.DataFrame]:
    if not days:
        from churn_mlops.data.synthetic import generate

        return generate(rows, seed=seed, drift=drift, bad_fraction=bad_fraction)
    from churn_mlops.data.history import history
    from churn_mlops.data.timestamps import parse_date

    try:
        until = parse_date(end) if end else None
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO date: {end!r}", param_hint="--end") from exc
    return history(rows, days=days, seed=seed, end=until)


@app.command("ingest")
def ingest_command(
    source: SourceOption,
    table_name: TableOption = None,
    query: QueryOption = None,
    spec: SpecOption = None,
    unlabelled: UnlabelledOption = False,
    as_json: JsonOption = False,
) -> None:
    """Validate a source and store its valid rows as a versioned lake table."""
    from churn_mlops.data import ingest as jobs
    from churn_mlops.data.lake import Lake
    from churn_mlops.data.sources import Source
    from churn_mlops.monitoring.runs import record_ingest

    settings = get_settings()
    origin = Source(source, table_name, query)
    with status(f"ingesting {source}"):
        result = jobs.ingest(
            origin,
            dataset_spec_from(spec),
            lake=Lake(settings.lake_dir),
            quarantine_dir=settings.quarantine_dir,
            require_target=not unlabelled,
        )
    record_ingest(settings, result, origin.describe())
    show_ingest(result, as_json)


@app.command("validate")
def validate_command(
    source: SourceOption,
    table_name: TableOption = None,
    query: QueryOption = None,
    spec: SpecOption = None,
    unlabelled: UnlabelledOption = False,
    quarantine: Annotated[bool, typer.Option(help="Write quarantined rows to CHURN_HOME.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Check a source against the dataset spec without storing it."""
    from churn_mlops.data import ingest as jobs
    from churn_mlops.data.sources import Source

    settings = get_settings()
    with status(f"validating {source}"):
        result = jobs.check(
            Source(source, table_name, query),
            dataset_spec_from(spec),
            quarantine_dir=settings.quarantine_dir if quarantine else None,
            require_target=not unlabelled,
        )
    show_ingest(result, as_json)


@app.command("list")
def list_command(
    dataset: Annotated[str | None, typer.Option(help="Only versions of this dataset.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List the versions in the lake, oldest first."""
    from churn_mlops.data.lake import Lake

    versions = Lake(get_settings().lake_dir).versions(dataset)
    if as_json:
        print_json([_version_json(v) for v in versions])
        return
    rows = [(m.dataset, m.version, m.rows, m.created_at, m.source) for m in (v.manifest for v in versions)]
    table("Lake versions", ["dataset", "version", "rows", "created", "source"], rows)


@app.command("show")
def show_command(
    version: Annotated[str, typer.Argument(help="Version id, a unique prefix, or 'latest'.")],
    as_json: JsonOption = False,
) -> None:
    """Show one lake version's manifest."""
    from churn_mlops.data.lake import Lake

    found = Lake(get_settings().lake_dir).get(version)
    if as_json:
        print_json(_version_json(found))
        return
    manifest = _version_json(found)
    table(
        f"Lake version {found.manifest.version}",
        ["field", "value"],
        [(k, v) for k, v in manifest.items() if k != "validation"],
    )


def _version_json(version: LakeVersion) -> dict[str, object]:
    return {**vars(version.manifest), "path": str(version.data_path)}


def show_ingest(result: IngestResult, as_json: bool) -> None:
    """Print an ingestion or validation report as tables, or as JSON."""
    summary = result.summary()
    if as_json:
        print_json(summary)
        return
    report = result.report
    lines: list[tuple[str, object]] = [
        ("rows in", report.rows_in),
        ("valid", report.rows_valid),
        ("quarantined", report.rows_quarantined),
    ]
    if report.target_rate is not None:
        lines.append(("target rate", f"{report.target_rate:.1%}"))
    if result.version is not None:
        state = "new" if result.version.created else "already in the lake"
        lines += [
            ("lake version", f"{result.version.manifest.version} ({state})"),
            ("lake path", summary["lake_path"]),
        ]
    if result.quarantine_path is not None:
        lines.append(("quarantine", str(result.quarantine_path)))
    table(f"Validation of {report.spec} data", ["", ""], lines)
    if report.failures:
        failures = [(f["column"], f["check"], f["rows"], f["example"]) for f in report.failures]
        table("Quarantined rows by reason", ["column", "check", "rows", "example"], failures)
