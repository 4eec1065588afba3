"""``sorakit webhooks``: endpoints that hear when a user's videos finish (``video.completed``,
``video.failed``), registered by the operator."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from ..store import store_for
from ..store.webhooks import EVENTS, WebhookStore
from .common import DataDir, fail, settings

app = typer.Typer(help="Manage webhook endpoints.", no_args_is_help=True)


def _events(text: str) -> list[str]:
    chosen = [e.strip() for e in text.split(",") if e.strip()]
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown or not chosen:
        raise typer.BadParameter(f"events are a comma-separated subset of {', '.join(EVENTS)}; "
                                 f"got {text!r}")
    return list(dict.fromkeys(chosen))


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise typer.BadParameter(f"{text!r} is not an http:// or https:// URL")
    return text


def _webhooks(data_dir):
    store = store_for(settings(data_dir=data_dir))
    return store, WebhookStore(store.engine, store.clock)


@app.command("add")
def add(user: Annotated[str, typer.Argument(help="The user whose videos it hears about.")],
        url: Annotated[str, typer.Argument(help="Where events are POSTed.", callback=_url)],
        events: Annotated[str, typer.Option(help="Comma-separated events to send.")] = ",".join(EVENTS),
        data_dir: DataDir = None) -> None:
    """Register an endpoint. Its signing secret is printed once, alone on the last line."""
    chosen = _events(events)
    store, hooks = _webhooks(data_dir)
    found = store.user_by_name(user)
    if found is None:
        fail(f"no user named {user!r} (add one with `sorakit users add {user}`)")
    row = hooks.add_endpoint(found["id"], url, chosen)
    typer.echo(f"webhook {row['id']} for {user} -> {url} ({', '.join(chosen)}); its secret, shown only now:")
    typer.echo(row["secret"])


@app.command("list")
def list_endpoints(user: Annotated[str | None, typer.Argument(help="Only this user's.")] = None,
                   data_dir: DataDir = None) -> None:
    """Show endpoints and how their deliveries went (secrets are never shown)."""
    store, hooks = _webhooks(data_dir)
    user_id = None
    if user is not None:
        found = store.user_by_name(user)
        if found is None:
            fail(f"no user named {user!r}")
        user_id = found["id"]
    table = Table("id", "user", "url", "events", "delivered", "pending", "failed")
    table.columns[0].no_wrap = True  # ids are copied from here into `remove`
    for row in hooks.endpoints(user_id):
        counts = row["counts"]
        table.add_row(row["id"], row["user_name"], row["url"], ", ".join(row["events"]),
                      str(counts["delivered"]), str(counts["pending"]), str(counts["failed"]))
    Console().print(table)


@app.command("remove")
def remove(endpoint_id: Annotated[str, typer.Argument(help="The endpoint's id (wh_...).")],
           data_dir: DataDir = None) -> None:
    """Delete an endpoint; what it had not received yet is never sent."""
    _, hooks = _webhooks(data_dir)
    if not hooks.remove_endpoint(endpoint_id):
        fail(f"no webhook {endpoint_id!r}")
    typer.echo(f"removed {endpoint_id}")
