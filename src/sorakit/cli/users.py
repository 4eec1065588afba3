"""``sorakit users``: add and list the people who may use this server, set their passwords for
the web app, and disable or enable them."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..server.sessions import MIN_PASSWORD_CHARS, hash_password
from ..store import NameTaken, Store, store_for
from .common import DataDir, fail, settings

app = typer.Typer(help="Manage users.", no_args_is_help=True)

PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from the first line of standard input.")]


def _password(from_stdin: bool) -> str:
    """A password from stdin's first line, or typed twice at a hidden prompt; exit 2 when short."""
    if from_stdin:
        password = typer.get_text_stream("stdin").readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_CHARS:
        fail(f"a password needs at least {MIN_PASSWORD_CHARS} characters", code=2)
    return password


def _user(store: Store, name: str) -> dict:
    user = store.user_by_name(name)
    if user is None:
        fail(f"no user named {name!r} (add one with `sorakit users add {name}`)")
    return user


@app.command("add")
def add(name: str,
        concurrency: Annotated[int | None, typer.Option(min=1, help="Cap on unfinished tasks.")] = None,
        daily_limit: Annotated[int | None, typer.Option(min=1, help="Videos per rolling 24 h.")] = None,
        email: Annotated[str | None, typer.Option(help="Shown by the web app's session.")] = None,
        password_stdin: PasswordStdin = False,
        data_dir: DataDir = None) -> None:
    """Add a user; then `sorakit token create NAME` gives them a token, a password the web app."""
    s = settings(data_dir=data_dir)
    password = _password(True) if password_stdin else None  # read first: a refusal adds nobody
    store = store_for(s)
    try:
        user = store.create_user(name, concurrency, daily_limit, email=email)
    except NameTaken:
        fail(f"a user named {name!r} already exists")
    if password is not None:
        store.set_password(user["id"], hash_password(password))
    hint = "" if password else f"; `sorakit users passwd {name}` lets them sign in on the web"
    typer.echo(f"added user {user['name']} ({user['id']}){hint}")


@app.command("passwd")
def passwd(name: str, password_stdin: PasswordStdin = False, data_dir: DataDir = None) -> None:
    """Set a user's password for the web app (their signed-in browsers are signed out)."""
    s = settings(data_dir=data_dir)
    store = store_for(s)
    user = _user(store, name)
    ended = store.set_password(user["id"], hash_password(_password(password_stdin)))
    typer.echo(f"password set for {name}" + (f"; {ended} session(s) ended" if ended else ""))


@app.command("disable")
def disable(name: str, data_dir: DataDir = None) -> None:
    """Disable a user at once: sessions end, every token is refused, sign-in fails."""
    s = settings(data_dir=data_dir)
    store = store_for(s)
    ended = store.set_disabled(_user(store, name)["id"], True)
    typer.echo(f"disabled {name}; {ended} session(s) ended, tokens refused until "
               f"`sorakit users enable {name}`")


@app.command("enable")
def enable(name: str, data_dir: DataDir = None) -> None:
    """Enable a disabled user: their tokens work again (ended sessions stay ended)."""
    s = settings(data_dir=data_dir)
    store = store_for(s)
    store.set_disabled(_user(store, name)["id"], False)
    typer.echo(f"enabled {name}")


@app.command("list")
def list_users(data_dir: DataDir = None) -> None:
    """Show every user with their limits (defaults in brackets), password and state."""
    s = settings(data_dir=data_dir)
    table = Table("name", "id", "concurrency", "daily limit", "password", "disabled")
    for column in table.columns[:2]:
        column.no_wrap = True  # names and ids are copied from here: never folded
    for u in store_for(s).list_users():
        disabled = datetime.fromtimestamp(u["disabled_at"]).strftime("%Y-%m-%d") if u["disabled_at"] else ""
        table.add_row(u["name"], u["id"], str(u["concurrency_limit"] or f"[{s.default_concurrency}]"),
                      str(u["daily_limit"] or f"[{s.default_daily_limit}]"),
                      "yes" if u["password_hash"] else "no", disabled)
    # a pipe gets whole lines; a terminal gets its own width
    Console(width=None if sys.stdout.isatty() else 200).print(table)
