"""How the CLI talks to people and programs: Rich on stderr, JSON documents on stdout."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from churn_mlops.errors import ChurnError

out = Console()
err = Console(stderr=True)


JOBS_MODULES = frozenset({"matplotlib", "mlflow", "optuna", "pandera", "sklearn", "scipy"})  # the jobs extra


class ChurnGroup(TyperGroup):
    """A command group that turns a ChurnError into one line on stderr and its exit code."""

    def invoke(self, ctx: Any) -> Any:
        """Run the command; a ChurnError ends it with a message, not a traceback."""
        try:
            return super().invoke(ctx)
        except ChurnError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in JOBS_MODULES:
                raise
            err.print(
                f"[bold red]error:[/] this command needs {exc.name}, which the serving-only install leaves "
                "out; install the jobs extra: uv sync --extra jobs (or pip install 'churn-mlops[jobs]')",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2) from None


def print_json(document: object) -> None:
    """Print one JSON document on stdout, nothing else."""
    typer.echo(json.dumps(document, indent=2, default=str))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table on stdout."""
    view = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        numeric = all(isinstance(row[index], int) for row in rows) and bool(rows)
        view.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        view.add_row(*(str(v) for v in row))
    out.print(view)


@contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Any]:
    """A progress bar on stderr; yields a function advancing it by n units."""
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


@contextmanager
def status(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr while steps without measurable progress run; yields a step reporter."""
    if not err.is_terminal:
        yield lambda step: None
        return
    with err.status(message) as spinner:
        yield lambda step: spinner.update(f"{message}: {step}")
