"""``sorakit users``: add and list the people who may use this server."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..store import NameTaken, open_store
from .common import DataDir, fail, settings

app = typer.Typer(help="Manage users.", no_args_is_help=True)


@app.command("add")
def add(name: str,
        concurrency: Annotated[int | None, typer.Option(min=1, help="Cap on unfinished tasks.")] = None,
        daily_limit: Annotated[int | None, typer.Option(min=1, help="Videos per rolling 24 h.")] = None,
        data_dir: DataDir = None) -> None:
    """Add a user; then `sorakit token create NAME` gives them a token."""
    s = settings(data_dir=data_dir)
    try:
        user = open_store(s.db_path).create_user(name, concurrency, daily_limit)
    except NameTaken:
        fail(f"a user named {name!r} already exists")
    typer.echo(f"added user {user['name']} ({user['id']})")


@app.command("list")
def list_users(data_dir: DataDir = None) -> None:
    """Show every user with their limits (defaults in brackets)."""
    s = settings(data_dir=data_dir)
    table = Table("name", "id", "concurrency", "daily limit")
    for u in open_store(s.db_path).list_users():
        table.add_row(u["name"], u["id"], str(u["concurrency_limit"] or f"[{s.default_concurrency}]"),
                      str(u["daily_limit"] or f"[{s.default_daily_limit}]"))
    Console().print(table)
