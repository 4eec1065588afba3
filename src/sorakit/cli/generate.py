"""``sorakit generate``: create -> follow -> download, with a progress bar."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..client import OutageEvent, errors, files
from ..client.core import Core
from ..client.sync import sidecar_data
from .common import EXIT_INTERRUPTED, client_error_exit, fail
from .connect import Connection, MaxOutage, connect, print_outages

SECONDS = (5, 10, 15, 20, 25)
Server = Annotated[str | None, typer.Option("--server", help="API base URL (SORAKIT_SERVER); "
                                            "none: an embedded server over the default data dir.")]
Token = Annotated[str | None, typer.Option("--token", help="Bearer token (SORAKIT_TOKEN).")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def frames_for(seconds: int | None, frames: int | None) -> int:
    if seconds is not None and frames is not None:
        raise typer.BadParameter("give --seconds or --frames, not both")
    if frames is not None:
        return frames
    if seconds is not None and seconds not in SECONDS:
        raise typer.BadParameter(f"--seconds must be one of {', '.join(map(str, SECONDS))}")
    return (seconds or 10) * 30


class ProgressView:
    """A Rich progress bar fed by task snapshots: status, queue position, percent, elapsed.

    During an outage each attempt prints a line above it and the bar says ``retrying``.
    """

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.fields[status]:<12}"), BarColumn(),
                                 TextColumn("{task.percentage:>5.1f}%"), TextColumn("{task.fields[queue]}"),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.bar = self.progress.add_task("video", total=1.0, status="submitting", queue="")
        self._say = print_outages(console)

    def update(self, task: dict) -> None:
        pos = task.get("progress_pos_in_queue")
        queue = f"queue #{pos}" if pos else ""
        self.progress.update(self.bar, completed=task.get("progress_pct") or 0.0,
                             status=task.get("status", "?"), queue=queue)

    def bytes(self, count: int) -> None:
        self.progress.update(self.bar, status="downloading", queue=f"{count / 1e6:.1f} MB")

    def outage(self, event: OutageEvent) -> None:
        self._say(event)
        status = "retrying" if event.state == "waiting" else "reconnected"
        self.progress.update(self.bar, status=status, queue="")


def _detached(task_id: str | None, conn: Connection) -> None:
    where = ("it resumes the next time sorakit uses this data dir" if conn.embedded
             else f"it keeps running on {conn.server}")
    if task_id:
        typer.echo(f"\nDetached from {task_id}; {where}. Pick it up with:\n"
                   f"  sorakit download {task_id}", err=True)
    raise typer.Exit(EXIT_INTERRUPTED)


def generate(prompt: str,
             orientation: Annotated[str, typer.Option(help="portrait, landscape or square.")] = "portrait",
             seconds: Annotated[int | None, typer.Option(help="5, 10, 15, 20 or 25 (default 10).")] = None,
             frames: Annotated[int | None, typer.Option(help="Exact frame count at 30 fps.")] = None,
             size: Annotated[str, typer.Option(help="small or large.")] = "small",
             model: Annotated[str, typer.Option(help="Model id.")] = "sy_8",
             style: Annotated[str | None, typer.Option(help="Style preset (style_id).")] = None,
             seed: Annotated[int | None, typer.Option(help="Seed, for the same video again.")] = None,
             output: Annotated[str, typer.Option("-o", "--output", help="File name template: {task_id} "
                                                 "{gen_id} {prompt_slug} {date} {index}.")] = files.DEFAULT_TEMPLATE,
             no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the task id and return.")] = False,
             timeout: Annotated[float | None, typer.Option(help="Give up waiting after SECONDS.")] = None,
             server: Server = None, token: Token = None, max_outage: MaxOutage = None,
             as_json: Json = False) -> None:
    """Generate a video from PROMPT and download it."""
    try:
        files.check_template(output)  # before anything is created: a typo must not cost a video
    except files.TemplateError as exc:
        fail(str(exc), code=2)
    fields = dict(orientation=orientation, size=size, model=model, style_id=style, seed=seed,
                  n_frames=frames_for(seconds, frames))
    try:
        with connect(server, token, max_outage=max_outage) as conn:
            _generate(conn, prompt, fields, output, no_wait, timeout, as_json)
    except errors.SoraError as exc:
        client_error_exit(exc)
    except files.TemplateError as exc:
        fail(str(exc), code=2)


def _generate(conn: Connection, prompt: str, fields: dict, output: str, no_wait: bool,
              timeout: float | None, as_json: bool) -> None:
    client, task_id = conn.client, None
    view = ProgressView(Console(stderr=True))
    client.core.on_outage = view.outage  # shown from the create on, bar or no bar
    started = time.time()
    try:
        task_id = client.create(prompt, **fields)["id"]
        if no_wait:
            typer.echo(json.dumps({"task_id": task_id}) if as_json else task_id)
            return
        with view.progress:
            task = client.wait(task_id, on_progress=view.update, timeout=timeout)
            draft = task["generations"][0]
            path = files.render(output, task_id=task_id, gen_id=draft.get("id"), prompt=prompt)
            sha = client.download({**draft, "task_id": task_id}, path, on_bytes=view.bytes)
        _finish(conn, task, draft, path, sha, Core.create_body(prompt, **fields), started, as_json)
    except KeyboardInterrupt:
        _detached(task_id, conn)


def _finish(conn, task, draft, path, sha, body, started, as_json) -> None:
    sidecar = files.write_sidecar(path, sidecar_data(conn.server, task, draft, body, path, sha, started))
    if as_json:
        typer.echo(json.dumps({"task_id": task["id"], "generation_id": draft.get("id"), "path": str(path),
                               "sidecar": str(sidecar), "sha256": sha}))
    else:
        typer.echo(f"{path}  ({draft.get('width')}x{draft.get('height')}, sidecar {sidecar.name})")
        engine = draft.get("engine") or {}
        if engine.get("placeholder"):
            typer.echo("note: made by the preview engine, a placeholder that draws the prompt, not a model",
                       err=True)
