"""``sorakit generate``: create -> follow -> download, with a progress bar."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from ..client import errors, files
from .common import EXIT_INTERRUPTED, client_error_exit, fail
from .connect import Connection, MaxOutage, connect, print_outages

if TYPE_CHECKING:  # loaded by the commands that use them (see main.py)
    from rich.console import Console

    from ..client import GenerateResult, OutageEvent, SoraClient

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
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

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


Output = Annotated[str, typer.Option("-o", "--output", help="File name template: {task_id} {gen_id} "
                                      "{prompt_slug} {date} {index}; N videos (variants) are saved as "
                                      "NAME-1.mp4 ... NAME-N.mp4.")]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Print the task id and return.")]
Timeout = Annotated[float | None, typer.Option(help="Give up waiting after SECONDS.")]


def generate(prompt: str,
             orientation: Annotated[str, typer.Option(help="portrait, landscape or square.")] = "portrait",
             seconds: Annotated[int | None, typer.Option(help="5, 10, 15, 20 or 25 (default 10).")] = None,
             frames: Annotated[int | None, typer.Option(help="Exact frame count at 30 fps.")] = None,
             size: Annotated[str, typer.Option(help="small or large.")] = "small",
             model: Annotated[str, typer.Option(help="Model id.")] = "sy_8",
             style: Annotated[str | None, typer.Option(help="Style preset (style_id).")] = None,
             seed: Annotated[int | None, typer.Option(help="Seed, for the same video again.")] = None,
             variants: Annotated[int, typer.Option("--variants", min=1, help="Make N videos of the prompt in "
                                                   "one task (downloaded as NAME-1.mp4 ... NAME-N.mp4).")] = 1,
             output: Output = files.DEFAULT_TEMPLATE, no_wait: NoWait = False, timeout: Timeout = None,
             server: Server = None, token: Token = None, max_outage: MaxOutage = None,
             as_json: Json = False) -> None:
    """Generate a video from PROMPT and download it."""
    from ..client.core import Core

    fields = dict(orientation=orientation, size=size, model=model, style_id=style, seed=seed,
                  n_frames=frames_for(seconds, frames), variants=variants)
    run_and_fetch(server, token, max_outage, output, lambda: Core.create_body(prompt, **fields),
                  lambda client, body: client.create(prompt, **fields), no_wait, timeout, as_json)


def run_and_fetch(server: str | None, token: str | None, max_outage: float | None, output: str,
                  make_body: Callable[[], dict], submit: Callable[[SoraClient, dict], dict], no_wait: bool,
                  timeout: float | None, as_json: bool) -> None:
    """What every creating command does: check the template, build the request (bad input: exit
    2, before anything is sent), connect, submit, then follow and download (or print the task id).

    ``make_body`` builds the body the library will send (for the sidecars); ``submit`` creates
    the task through the library and returns its answer.
    """
    try:
        files.check_template(output)  # before anything is created: a typo must not cost a video
        body = make_body()
    except (files.TemplateError, ValueError) as exc:
        fail(str(exc), code=2)
    try:
        with connect(server, token, max_outage=max_outage) as conn:
            follow_and_fetch(conn, lambda client: submit(client, body), body, output, no_wait, timeout, as_json)
    except errors.SoraError as exc:
        client_error_exit(exc)
    except files.TemplateError as exc:
        fail(str(exc), code=2)


def follow_and_fetch(conn: Connection, submit: Callable[[SoraClient], dict], body: dict, output: str,
                     no_wait: bool, timeout: float | None, as_json: bool) -> None:
    """Submit, follow the task with a progress bar, download every video it made, print them.

    Ctrl-C detaches: the task keeps running and the command says how to pick it up.
    """
    from rich.console import Console

    client, task_id = conn.client, None
    view = ProgressView(Console(stderr=True))
    client.core.on_outage = view.outage  # shown from the create on, bar or no bar
    started = time.time()
    try:
        task_id = submit(client)["id"]
        if no_wait:
            typer.echo(json.dumps({"task_id": task_id}) if as_json else task_id)
            return
        with view.progress:
            task = client.wait(task_id, on_progress=view.update, timeout=timeout)
            result = client.download_task(task, output, body=body, started=started, on_bytes=view.bytes)
        _finish(result, as_json)
    except KeyboardInterrupt:
        _detached(task_id, conn)


def _finish(result: GenerateResult, as_json: bool) -> None:
    videos = result.videos
    if as_json:
        listed = [{"generation_id": v.draft.get("id"), "path": str(v.path), "sidecar": str(v.sidecar),
                   "sha256": v.sha256} for v in videos]
        typer.echo(json.dumps({"task_id": result.task["id"], **listed[0], "videos": listed}))
        return
    for v in videos:
        typer.echo(f"{v.path}  ({v.draft.get('width')}x{v.draft.get('height')}, sidecar {v.sidecar.name})")
    if any((v.draft.get("engine") or {}).get("placeholder") for v in videos):
        typer.echo("note: made by the preview engine, a placeholder that draws the prompt, not a model", err=True)
