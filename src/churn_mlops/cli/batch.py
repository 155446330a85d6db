"""`churn batch score`: score the whole customer base, locally or on Apache Spark."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from churn_mlops.cli.options import (
    JsonOption,
    ModelOption,
    QueryOption,
    SpecOption,
    TableOption,
    dataset_spec_from,
    parse_date,
)
from churn_mlops.cli.output import ChurnGroup, print_json, progress, table
from churn_mlops.settings import get_settings


class EngineChoice(StrEnum):
    """Where batch scoring runs."""

    LOCAL = "local"
    SPARK = "spark"


app = typer.Typer(cls=ChurnGroup, help="Batch scoring of the whole customer base.", no_args_is_help=True)


@app.command("score")
def score_command(
    input_: Annotated[str, typer.Option("--input", "-i", help="CSV or Parquet path, or a SQLAlchemy URL.")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="A .parquet file, a folder, or a SQLAlchemy URL.")
    ],
    table_name: TableOption = None,
    query: QueryOption = None,
    output_table: Annotated[str | None, typer.Option(help="Table for a database output.")] = None,
    model: ModelOption = "champion",
    engine: Annotated[
        EngineChoice, typer.Option(help="local (streaming Arrow batches) or spark.")
    ] = EngineChoice.LOCAL,
    run_date: Annotated[str | None, typer.Option(help="Run date YYYY-MM-DD (default today, UTC).")] = None,
    top: Annotated[
        int, typer.Option(min=0, help="Also write the K customers with most revenue at risk.")
    ] = 0,
    top_output: Annotated[
        Path | None, typer.Option(help="CSV for --top (default under CHURN_HOME/batch).")
    ] = None,
    spark_master: Annotated[str | None, typer.Option(help="Spark master URL (default local[*]).")] = None,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Validate, score and write every customer; bad rows are quarantined. Re-running a date replaces it."""
    from churn_mlops.batch.job import BatchRequest, score_customers
    from churn_mlops.data.sources import Source

    settings = get_settings()
    if spark_master:
        settings = settings.model_copy(
            update={"batch": settings.batch.model_copy(update={"spark_master": spark_master})}
        )
    request = BatchRequest(
        source=Source(input_, table_name, query),
        target=Source(output, table=output_table),
        model=model,
        engine="spark" if engine is EngineChoice.SPARK else "local",
        run_date=parse_date(run_date, "--run-date"),
        top_k=top,
        top_output=top_output,
    )
    with progress(f"scoring ({engine})") as advance:
        summary = score_customers(request, dataset_spec_from(spec), settings, advance)
    if as_json:
        print_json(summary)
    else:
        _show(summary)


def _scorer(summary: dict[str, Any]) -> str:
    """Which trees scored: compiled (and how long compiling took), LightGBM's, or the linear model."""
    seconds = summary.get("compile_seconds")
    return f"{summary['scorer']} (compiled in {seconds} s)" if seconds else str(summary["scorer"])


def _show(summary: dict[str, Any]) -> None:
    scores = summary["scores"]
    rows = [
        ("model version", summary["model_version"]),
        ("run date", summary["run_date"]),
        ("rows in", summary["rows_in"]),
        ("scored", summary["rows_scored"]),
        ("quarantined", summary["rows_quarantined"]),
        ("throughput", f"{summary['rows_per_s']:,} rows/s ({summary['seconds']} s, {summary['engine']})"),
        ("scorer", _scorer(summary)),
        ("mean probability", f"{scores['mean']:.3f}" if scores["mean"] is not None else "-"),
        (
            "p50 / p90 / p99",
            " / ".join(f"{scores[q]:.2f}" for q in ("p50", "p90", "p99")) if scores["mean"] else "-",
        ),
        ("risk high / medium / low", " / ".join(str(scores["risk"][r]) for r in ("high", "medium", "low"))),
        ("revenue at risk", f"{summary['revenue_at_risk']:,.2f}"),
        ("output", summary["output"]),
    ]
    rows += [("quarantine", summary["quarantine_path"])] if summary["quarantine_path"] else []
    rows += [("top customers", summary["top_path"])] if summary["top_path"] else []
    table("Batch scoring", ["", ""], rows)
