"""`churn keys`: create, revoke and list the model server's API keys."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from churn_mlops.cli.options import JsonOption
from churn_mlops.cli.output import ChurnGroup, err, print_json, table
from churn_mlops.serving.keys import SCOPES, KeyStore
from churn_mlops.settings import get_settings

app = typer.Typer(
    cls=ChurnGroup, help="API keys of the model server: create, revoke, list.", no_args_is_help=True
)
NameArgument = Annotated[str, typer.Argument(help="The key's name.")]


@contextmanager
def open_store() -> Iterator[KeyStore]:
    """The key store in the serving database named by the settings."""
    store = KeyStore(get_settings().serving_database_url, cache_seconds=0)
    try:
        yield store
    finally:
        store.close()


@app.command("create")
def create_command(
    name: Annotated[str, typer.Option("--name", "-n", help="A unique name, e.g. the client's.")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help=f"Repeat for several: {', '.join(sorted(SCOPES))}.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it once: only its hash is stored, so it cannot be shown again."""
    with open_store() as store:
        key, created = store.create(name, scope)
    if as_json:
        print_json(
            {
                "name": created.name,
                "key": key,
                "scopes": sorted(created.scopes),
                "created_at": created.created_at,
            }
        )
        return
    scopes = ", ".join(sorted(created.scopes))
    err.print(f"created API key [bold]{created.name}[/] with scopes {scopes}", highlight=False)
    err.print("[yellow]store it now: it cannot be shown again[/]", highlight=False)
    typer.echo(key)


@app.command("revoke")
def revoke_command(name: NameArgument, as_json: JsonOption = False) -> None:
    """Revoke the active key of this name; servers reject it within seconds."""
    with open_store() as store:
        revoked = store.revoke(name)
    if as_json:
        print_json(revoked.to_json())
    else:
        typer.echo(f"revoked API key {revoked.name}")


@app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """List keys by name, scopes and state; the keys themselves are never shown."""
    with open_store() as store:
        keys = store.list()
    if as_json:
        print_json([k.to_json() for k in keys])
        return
    rows = [
        (k.name, ", ".join(sorted(k.scopes)), k.created_at, "revoked" if k.revoked else "active")
        for k in keys
    ]
    table("API keys", ["name", "scopes", "created", "state"], rows)
