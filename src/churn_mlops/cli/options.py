"""Options that several `churn` commands share, and the parsing of their values."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from churn_mlops.data.spec import DatasetSpec, load_spec
from churn_mlops.settings import get_settings

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
SpecOption = Annotated[Path | None, typer.Option(help="Dataset spec YAML (default: built-in Telco spec).")]
SourceOption = Annotated[
    str, typer.Option("--source", "-s", help="CSV or Parquet path, or a SQLAlchemy URL.")
]
TableOption = Annotated[str | None, typer.Option("--table", help="Table to read, for a database source.")]
QueryOption = Annotated[str | None, typer.Option("--query", help="SQL query to read, for a database source.")]
ModelOption = Annotated[
    str, typer.Option("--model", help="Model version, or an alias: champion, challenger, latest.")
]
TuneOption = Annotated[bool, typer.Option("--tune", help="Search LightGBM parameters with Optuna first.")]
TrialsOption = Annotated[int, typer.Option("--trials", min=1, help="Optuna trials when tuning.")]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Seed for the split and the model.")]
CustomerSeedOption = Annotated[
    int, typer.Option("--seed", help="Random seed; the same seed gives the same customers.")
]
PortOption = Annotated[
    int | None,
    typer.Option("--port", min=1, max=65535, help="Port to serve on (default from settings: 8000)."),
]


def parse_date(text: str | None, option: str) -> date | None:
    """A YYYY-MM-DD option's date; a clear usage error naming the option if it is not one."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a date like 2026-11-29", param_hint=option) from exc


def dataset_spec_from(path: Path | None) -> DatasetSpec:
    """The spec given on the command line, else the configured one, else the built-in Telco spec."""
    return load_spec(path or get_settings().data.spec)
