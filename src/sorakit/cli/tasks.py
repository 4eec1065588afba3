"""``sorakit status | list | download | cancel | usage``: look after tasks and drafts."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from ..client import errors, files
from .common import client_error_exit, fail
from .connect import QUICK_OUTAGE, MaxOutage, QuickMaxOutage, connect, print_outages
from .generate import Json, ProgressView, Server, Token

TASK_COLUMNS = ("id", "status", "progress_pct", "progress_pos_in_queue", "prompt")


def _quick_connect(server: str | None, token: str | None, max_outage: float | None):
    """For a command someone waits on for a one-screen answer: a short outage is waited out, said on stderr."""
    return connect(server, token, max_outage=max_outage, default_outage=QUICK_OUTAGE, on_outage=print_outages())


def _echo_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _percent(task: dict) -> str:
    value = task.get("progress_pct")
    return "" if value is None else f"{value * 100:.0f}%"


def status(task_ids: Annotated[list[str] | None, typer.Argument(help="Task ids; none: every pending task.")] = None,
           server: Server = None, token: Token = None, max_outage: QuickMaxOutage = None,
           as_json: Json = False) -> None:
    """Show tasks: the pending list, or the given ones."""
    from rich.console import Console
    from rich.table import Table

    try:
        with _quick_connect(server, token, max_outage) as conn:
            tasks = [conn.client.task(t) for t in task_ids] if task_ids else conn.client.pending()
    except errors.SoraError as exc:
        client_error_exit(exc)
    if as_json:
        _echo_json(tasks)
        return
    table = Table("task", "status", "progress", "queue", "prompt", "failure")
    for t in tasks:
        table.add_row(t.get("id"), t.get("status"), _percent(t), str(t.get("progress_pos_in_queue") or ""),
                      (t.get("prompt") or "")[:50], t.get("failure_reason") or "")
    Console().print(table if tasks else "no pending tasks")


def list_drafts(limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
                server: Server = None, token: Token = None, max_outage: QuickMaxOutage = None,
                as_json: Json = False) -> None:
    """List drafts (finished generations), newest first."""
    from rich.console import Console
    from rich.table import Table

    try:
        with _quick_connect(server, token, max_outage) as conn:
            drafts = []
            for draft in conn.client.drafts(limit=min(limit, 100)):
                drafts.append(draft)
                if len(drafts) >= limit:
                    break
    except errors.SoraError as exc:
        client_error_exit(exc)
    if as_json:
        _echo_json(drafts)
        return
    table = Table("draft", "task", "kind", "size", "created", "prompt")
    for d in drafts:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.get("created_at") or 0))
        table.add_row(d.get("id"), d.get("task_id"), d.get("kind"), f"{d.get('width')}x{d.get('height')}",
                      created, (d.get("prompt") or "")[:50])
    Console().print(table if drafts else "no drafts")


def download(target: Annotated[str, typer.Argument(help="A task id (task_...) or draft id (gen_...).")],
             output: Annotated[str, typer.Option("-o", "--output", help="File name template.")] = files.DEFAULT_TEMPLATE,
             wait: Annotated[bool, typer.Option(help="Wait for an unfinished task first.")] = True,
             server: Server = None, token: Token = None, max_outage: MaxOutage = None,
             as_json: Json = False) -> None:
    """Download the video of a task or draft (resuming a partial download)."""
    try:
        with connect(server, token, max_outage=max_outage) as conn:
            _download(conn, target, output, wait, as_json)
    except errors.SoraError as exc:
        client_error_exit(exc)
    except files.TemplateError as exc:
        fail(str(exc), code=2)


def _download(conn, target: str, output: str, wait: bool, as_json: bool) -> None:
    from rich.console import Console

    from ..client.download import find_draft
    from ..client.sync import sidecar_data

    client = conn.client
    is_gen = target.startswith("gen_")
    view = ProgressView(Console(stderr=True))
    client.core.on_outage = view.outage
    with view.progress:
        task = client.wait(target, on_progress=view.update) if wait and not is_gen else None
        if task is not None and len(_videos(task)) > 1:  # variations: every video of the task
            result = client.download_task(task, output, on_bytes=view.bytes)
            return _print_many(result, as_json)
        draft = client._run(find_draft(client.core, None if is_gen else target, target if is_gen else None))
        if not draft or not (draft.get("url") or draft.get("downloadable_url")):
            fail(f"no downloadable video for {target}")
        task = task or {"id": draft.get("task_id"), "prompt": draft.get("prompt")}
        path = files.render(output, task_id=task["id"] or target, gen_id=draft.get("id"),
                            prompt=draft.get("prompt") or "")
        sha = client.download({**draft, "task_id": task["id"]}, path, on_bytes=view.bytes)
    sidecar = files.write_sidecar(path, sidecar_data(conn.server, task, draft, {"prompt": draft.get("prompt")},
                                                     path, sha, time.time()))
    if as_json:
        _echo_json({"path": str(path), "sidecar": str(sidecar), "sha256": sha, "generation_id": draft.get("id")})
    else:
        typer.echo(str(path))


def _print_many(result, as_json: bool) -> None:
    if as_json:
        _echo_json({"paths": [str(v.path) for v in result.videos], "sha256": [v.sha256 for v in result.videos],
                    "generation_ids": [v.draft.get("id") for v in result.videos]})
    else:
        for video in result.videos:
            typer.echo(str(video.path))


def _videos(task: dict) -> list[dict]:
    return [g for g in task.get("generations") or [] if g.get("kind", "sora_draft") == "sora_draft"]


def cancel(task_id: str, server: Server = None, token: Token = None, as_json: Json = False) -> None:
    """Cancel a task (sorakit's own extension of the API)."""
    try:
        with connect(server, token) as conn:
            task = conn.client.cancel(task_id)
    except errors.SoraError as exc:
        client_error_exit(exc)
    if as_json:
        _echo_json(task)
    else:
        typer.echo(f"{task_id}: {task.get('status')}")


def usage(server: Server = None, token: Token = None, max_outage: QuickMaxOutage = None,
          as_json: Json = False) -> None:
    """Show the quota: videos left today and when the next one frees up."""
    try:
        with _quick_connect(server, token, max_outage) as conn:
            body = conn.client.usage()
    except errors.SoraError as exc:
        client_error_exit(exc)
    if as_json:
        _echo_json(body)
        return
    b = body.get("rate_limit_and_credit_balance") or {}
    typer.echo(f"videos left: {b.get('estimated_num_videos_remaining')}  "
               f"(limit reached: {'yes' if b.get('rate_limit_reached') else 'no'}; "
               f"next frees in {b.get('access_resets_in_seconds')} s)")
    if "concurrency_limit" in body:
        typer.echo(f"in progress: {body.get('tasks_in_progress')} of {body.get('concurrency_limit')}")
