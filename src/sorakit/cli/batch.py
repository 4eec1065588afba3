"""``sorakit batch FILE``: a video for every row of a file, resumable after any crash.

Thin: parse options, open the journal, call ``sorakit.batch.run_batch``, show its events (a live
Rich table on a terminal, plain lines otherwise, both on stderr), print the summary on stdout.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..batch import Journal, JournalError, RowError, load_rows, run_batch
from ..batch.journal import Entry, excerpt
from ..batch.rows import ORIENTATIONS, SIZES, frames_from
from ..batch.runner import EXIT_INTERRUPTED, BatchResult, Event, check_template, duration_words
from ..client import errors, files
from .common import exit_code_for, fail
from .connect import MaxOutage, connect

TABLE_ROWS = 20
STATE_STYLE = {"pending": "dim", "submitting": "yellow", "submitted": "cyan", "done": "green", "failed": "red"}


def batch(
    file: Annotated[Path, typer.Argument(help="Prompts: text (one a line, # comments), .csv with a header, "
                                               "or .jsonl with per-row parameters.", show_default=False)],
    server: Annotated[str | None, typer.Option(help="Server URL (default: SORAKIT_SERVER, the saved "
                                                    "login, else an embedded server).")] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token (default: SORAKIT_TOKEN, the saved "
                                                   "login, else local.token).")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Output name template, relative to "
                                        "--out-dir: {task_id} {gen_id} {prompt_slug} {date} {index}.")]
    = files.DEFAULT_TEMPLATE,
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where videos go.")] = Path("."),
    journal: Annotated[Path | None, typer.Option(help="Journal file (default: <out-dir>/.sorakit-batch-"
                                                      "<FILE stem>.sqlite).", show_default=False)] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Submit failed rows again.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final summary as JSON.")] = False,
    max_in_flight: Annotated[int | None, typer.Option(min=1, help="At most this many videos at once "
                                                      "(default: what the server allows).",
                                                      show_default=False)] = None,
    orientation: Annotated[str | None, typer.Option(help=f"Default for rows without one: "
                                                    f"{', '.join(ORIENTATIONS)} (default: portrait).",
                                                    show_default=False)] = None,
    size: Annotated[str | None, typer.Option(help="Default size: small or large (default: small).",
                                             show_default=False)] = None,
    seconds: Annotated[float | None, typer.Option(help="Default length in seconds (default: 10).",
                                                  show_default=False)] = None,
    frames: Annotated[int | None, typer.Option("--frames", "--n-frames", min=1, help="Default length "
                                               "in frames at 30 fps (instead of --seconds).",
                                               show_default=False)] = None,
    model: Annotated[str | None, typer.Option(help="Default model (default: sy_8).", show_default=False)] = None,
    style: Annotated[str | None, typer.Option(help="Default style preset.", show_default=False)] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="text, csv or jsonl (default: from the extension).",
                                            show_default=False)] = None,
    poll_interval: Annotated[float | None, typer.Option(min=0.1, help="Seconds between polls (default: 2 to 3, "
                                                        "slower while nothing moves).",
                                                        show_default=False)] = None,
    max_outage: MaxOutage = None,
) -> None:
    """Make a video for every row of FILE; run it again to resume after a crash or Ctrl-C."""
    defaults = _defaults(orientation, size, seconds, frames, model, style)
    try:
        rows = load_rows(file, fmt)
        for template in {output, *(row.output for row in rows if row.output)}:
            check_template(template)
    except (RowError, files.TemplateError) as exc:
        fail(str(exc), code=2)
    out_dir = out_dir.expanduser()
    journal_path = journal or out_dir / f".sorakit-batch-{file.stem}.sqlite"
    err = Console(stderr=True)
    try:
        jr = Journal(journal_path)
    except JournalError as exc:
        fail(str(exc))
    try:
        result = _run(err, jr, rows, out_dir, output, server, token, max_outage, defaults, max_in_flight,
                      retry_failed, poll_interval)
    except KeyboardInterrupt:
        _say(err, f"\ninterrupted. Progress is saved in {jr.path}; to resume, run the same command "
                  f"again:\n  {resume_command()}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (errors.SoraError, files.TemplateError) as exc:
        if os.environ.get("SORAKIT_DEBUG") == "1":
            raise
        _say(err, f"error: {exc}\nProgress is saved in {jr.path}; fix the cause and run the same "
                  f"command again to resume.", "red")
        raise typer.Exit(exit_code_for(exc)) from None
    finally:
        jr.close()
    _summary(result, as_json)
    raise typer.Exit(result.exit_code)


def _say(console: Console, text: str, style: str | None = None) -> None:
    """Plain text (no markup, no wrapping: commands and paths stay copyable)."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def _defaults(orientation, size, seconds, frames, model, style) -> dict:
    if orientation is not None and orientation.lower() not in ORIENTATIONS:
        raise typer.BadParameter(f"use one of {', '.join(ORIENTATIONS)}", param_hint="--orientation")
    if size is not None and size.lower() not in SIZES:
        raise typer.BadParameter(f"use one of {', '.join(SIZES)}", param_hint="--size")
    try:
        n_frames = frames_from(frames, seconds, "--frames/--seconds")
    except RowError as exc:
        raise typer.BadParameter(str(exc)) from None
    return {"orientation": orientation and orientation.lower(), "size": size and size.lower(),
            "n_frames": n_frames, "model": model, "style_id": style}


def _run(err: Console, jr: Journal, rows, out_dir, template, server, token, max_outage, defaults,
         max_in_flight, retry_failed, poll_interval) -> BatchResult:
    connection = connect(server, token, max_outage=max_outage)  # outages reach the view as events
    view = _View(err, jr)
    try:
        with view:
            return run_batch(connection.client, rows, jr, out_dir, template, defaults=defaults,
                             max_in_flight=max_in_flight, retry_failed=retry_failed,
                             poll_interval=poll_interval, on_event=view.event)
    finally:
        connection.close()


class _View:
    """A live table on a terminal; one line a change otherwise."""

    def __init__(self, console: Console, journal: Journal) -> None:
        self.console, self.journal = console, journal
        self.live: Live | None = None
        if console.is_terminal and os.environ.get("TERM") != "dumb":
            self.live = Live(console=console, get_renderable=self.render, refresh_per_second=4,
                             transient=False)

    def __enter__(self) -> _View:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def event(self, event: Event) -> None:
        if event.kind in ("warning", "daily_limit"):
            _say(self.console, f"warning: {event.message}", "yellow")
        elif event.kind == "outage":
            _say(self.console, event.message, "yellow")
        elif event.kind in ("cap", "info"):
            _say(self.console, event.message)
        elif event.kind == "state" and self.live is None and _worth_a_line(event):
            _say(self.console, _line(event.entry, event.message))
        if self.live:
            self.live.refresh()

    def render(self):
        entries = self.journal.entries
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name, justify in (("#", "right"), ("prompt", "left"), ("state", "left"), ("progress", "right"),
                              ("task", "left")):
            table.add_column(name, justify=justify, no_wrap=True)
        for e in _window(entries):
            table.add_row(str(e.idx), excerpt(e.prompt, 40), Text(e.state, STATE_STYLE.get(e.state, "")),
                          _progress(e), e.task_id or "")
        counts = self.journal.counts()
        caption = "  ".join(f"{k} {v}" for k, v in counts.items() if v)
        return Group(table, Text(f"{len(entries)} rows: {caption}", style="dim"))


def _window(entries: list[Entry]) -> list[Entry]:
    """What fits: every row in flight, the latest finished, the next pending."""
    if len(entries) <= TABLE_ROWS:
        return entries
    active = [e for e in entries if e.state in ("submitting", "submitted")]
    finished = sorted((e for e in entries if e.finished), key=lambda e: e.updated_at or 0)[-5:]
    waiting = [e for e in entries if e.state == "pending"][: max(TABLE_ROWS - len(active) - len(finished), 3)]
    return sorted({id(e): e for e in [*active, *finished, *waiting]}.values(), key=lambda e: e.idx)


def _progress(e: Entry) -> str:
    if e.state == "done":
        return "100%"
    if e.state != "submitted":
        return ""
    pct = f"{e.progress * 100:.0f}%" if isinstance(e.progress, (int, float)) else ""
    return f"{e.task_status or ''} {pct}".strip()


def _worth_a_line(event: Event) -> bool:
    """Plain output skips the in-between states (a row about to be sent, sent back by a 429)."""
    state = event.entry.state if event.entry else None
    return state in ("submitted", "done", "failed") or (state == "pending" and event.message == "retry requested")


def _line(e: Entry, detail: str) -> str:
    extra = {"submitted": e.task_id, "done": e.output, "failed": e.reason}.get(e.state)
    return f"row {e.idx} {e.state}" + (f" {extra}" if extra else "") + f"  ({excerpt(e.prompt, 40)})"


def _summary(result: BatchResult, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    typer.echo(f"{result.done} done, {result.failed} failed, {result.pending} pending of "
               f"{len(result.entries)}; videos in {result.out_dir}")
    for e in result.entries:
        if e.state == "failed":
            typer.echo(f"  row {e.idx} failed: {e.reason}  ({excerpt(e.prompt, 40)})")
    if result.failed:
        typer.echo("Run again with --retry-failed to submit the failed rows again.")
    if result.daily_limit_hit:
        data = result.as_dict()
        when = (f"at {time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(result.quota_resets_at))} "
                f"(in {duration_words(data['quota_resets_in_seconds'])})" if result.quota_resets_at else "later")
        typer.echo(f"Stopped by the daily limit: the quota resets {when}. Run the same command again "
                   f"then to make the {result.pending} pending video(s).")
    elif result.pending:
        typer.echo("Some rows could not finish; run the same command again to resume them.")


def resume_command() -> str:
    """The command line that was run, the token masked."""
    args, masked, hide_next = sys.argv[1:], [], False
    for arg in args:
        if hide_next:
            masked.append("***")
            hide_next = False
        elif arg == "--token":
            masked.append(arg)
            hide_next = True
        elif arg.startswith("--token="):
            masked.append("--token=***")
        else:
            masked.append(arg)
    return shlex.join(["sorakit", *masked])
