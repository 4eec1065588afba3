"""``sorakit workers``: the fleet as the database sees it: who is alive, what each runs, its task."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from .common import DatabaseUrl, DataDir, settings


def state_of(row: dict, now: float, alive_within: float) -> str:
    """busy / idle while its heartbeat is fresh; stopped after a clean stop; lost when its
    heartbeat stopped without one (killed, or its machine or network went away)."""
    if row["stopped_at"] is not None:
        return "stopped"
    if now - row["last_seen"] > alive_within:
        return "lost"
    return "busy" if row["current_task"] else "idle"


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0)
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def workers(data_dir: DataDir = None,
            database_url: DatabaseUrl = None,
            all_: Annotated[bool, typer.Option("--all", help="Also list stopped and lost workers.")] = False,
            as_json: Annotated[bool, typer.Option("--json", help="One JSON object per worker, one per line.")] = False,
            ) -> None:
    """List the workers: alive, busy or idle, what each serves and runs, when last seen."""
    from rich.console import Console
    from rich.table import Table

    from ..store import FLEET_ALIVE
    from .common import open_services_store

    store = open_services_store(settings(data_dir=data_dir, database_url=database_url))
    now = time.time()
    rows = [dict(r, state=state_of(r, now, FLEET_ALIVE)) for r in store.workers()]
    shown = rows if all_ else [r for r in rows if r["state"] in ("busy", "idle")]
    if as_json:
        for r in shown:
            print(json.dumps(r, sort_keys=True))
        return
    table = Table("name", "state", "task", "engines", "device", "done", "seen", "version")
    table.columns[0].no_wrap = True
    for r in shown:
        table.add_row(r["name"], r["state"], r["current_task"] or "", ", ".join(r["engines"]), r["device"] or "",
                      str(r["tasks_done"]), _ago(now - r["last_seen"]), r["version"])
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    alive = sum(r["state"] in ("busy", "idle") for r in rows)
    busy = sum(r["state"] == "busy" for r in rows)
    hidden = len(rows) - len(shown)
    more = f"; {hidden} stopped or lost (--all shows them)" if hidden else ""
    console.print(f"{alive} alive, {busy} busy{more}")
