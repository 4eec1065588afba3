"""``sorakit remix | extend | storyboard | share | unshare``: build on a video, and share one.

Thin like ``generate``: parse, call the library, print. The creating commands follow the task
and download its video exactly as ``generate`` does (``generate.run_and_fetch``).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import errors, files
from ..client.core import Core
from .common import client_error_exit, fail
from .connect import QUICK_OUTAGE, MaxOutage, QuickMaxOutage, connect, print_outages
from .generate import Json, NoWait, Output, Server, Timeout, Token, run_and_fetch

STORYBOARD_HELP = r"""Make one video from the shots in FILE, in order, and download it.

FILE is a text file, one shot a line: SECONDS, a colon, the prompt. The "s" is optional; blank lines and lines starting with # are skipped:

    # a storyboard
    5s: a cat walks into a sunlit kitchen
    3: the cat jumps onto the table
    2.5s: close-up of the cat's face

Or a TOML file (its name ends in .toml), with optional instructions, orientation, size, model, title, style and seed at the top:

    instructions = "soft light, one continuous camera"
    \[\[shots]]
    prompt = "a cat walks into a sunlit kitchen"
    seconds = 5
    \[\[shots]]
    prompt = "the cat jumps onto the table"
    seconds = 3

Options given on the command line win over the file's.
"""
TEXT_SHOT = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(?:s|sec|secs|seconds)?\s*:\s*(.*?)\s*$", re.IGNORECASE)
TOML_TOP = {"shots", "instructions", "orientation", "size", "model", "title", "style", "seed"}
TOML_SHOT = {"prompt", "seconds"}
Orientation = Annotated[str | None, typer.Option(help="portrait, landscape or square (default: the "
                                                 "source's for a remix, portrait otherwise).")]


class StoryboardFileError(ValueError):
    """A storyboard file that cannot be read; the message names the file and the line or shot."""


# -- storyboard files -----------------------------------------------------------------------
def read_storyboard(path: Path) -> dict[str, Any]:
    """``{"shots": [(prompt, seconds), ...], "instructions", "orientation", ...}`` from a
    storyboard file (text or TOML, see ``STORYBOARD_HELP``). Raises StoryboardFileError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StoryboardFileError(f"cannot read {path}: {exc}") from None
    return _read_toml(path, text) if path.suffix.lower() == ".toml" else _read_text(path, text)


def _read_text(path: Path, text: str) -> dict[str, Any]:
    shots = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = TEXT_SHOT.match(line)
        where = f"{path}, line {number}"
        if not found:
            raise StoryboardFileError(f"{where}: expected 'SECONDS: prompt' (like '5s: a cat walks in'), "
                                      f"got {line.strip()[:60]!r}")
        seconds, prompt = float(found.group(1)), found.group(2)
        if not prompt:
            raise StoryboardFileError(f"{where}: the shot has no prompt after the colon")
        if seconds <= 0:
            raise StoryboardFileError(f"{where}: a shot lasts more than 0 seconds")
        shots.append((prompt, seconds))
    if not shots:
        raise StoryboardFileError(f"{path}: no shots (one a line, like '5s: a cat walks in')")
    return {"shots": shots}


def _read_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StoryboardFileError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - TOML_TOP
    if unknown:
        raise StoryboardFileError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; "
                                  f"use {', '.join(sorted(TOML_TOP))}")
    raw_shots = data.get("shots")
    if not isinstance(raw_shots, list) or not raw_shots:
        raise StoryboardFileError(f"{path}: no shots; add [[shots]] tables with prompt and seconds")
    shots = []
    for n, shot in enumerate(raw_shots, 1):
        where = f"{path}, shot {n}"
        if not isinstance(shot, dict):
            raise StoryboardFileError(f"{where}: expected a [[shots]] table with prompt and seconds")
        extra = set(shot) - TOML_SHOT
        if extra:
            raise StoryboardFileError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; use prompt, seconds")
        prompt, seconds = shot.get("prompt"), shot.get("seconds")
        if not isinstance(prompt, str) or not prompt.strip():
            raise StoryboardFileError(f"{where}: prompt is missing or empty")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise StoryboardFileError(f"{where}: seconds must be a number more than 0, got {seconds!r}")
        shots.append((prompt.strip(), float(seconds)))
    for key in ("instructions", "orientation", "size", "model", "title", "style"):
        if key in data and not isinstance(data[key], str):
            raise StoryboardFileError(f"{path}: {key} must be text")
    if "seed" in data and (isinstance(data["seed"], bool) or not isinstance(data["seed"], int)):
        raise StoryboardFileError(f"{path}: seed must be a whole number")
    return {"shots": shots, **{k: v for k, v in data.items() if k != "shots"}}


# -- the commands -----------------------------------------------------------------------------
def remix(target: Annotated[str, typer.Argument(metavar="GEN_OR_POST",
                                                help="A draft of yours (gen_...) or a post (s_...).")],
          prompt: Annotated[str, typer.Argument(help="The new prompt.")],
          strength: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="0: keep the source, "
                                                         "1: ignore it (default: the engine's).")] = None,
          orientation: Orientation = None,
          seconds: Annotated[float | None, typer.Option(min=0.1, help="Length (default: the source's).")] = None,
          frames: Annotated[int | None, typer.Option(min=1, help="Exact frame count at 30 fps.")] = None,
          size: Annotated[str | None, typer.Option(help="small or large (default: the source's).")] = None,
          model: Annotated[str | None, typer.Option(help="Model id (default: the source's).")] = None,
          seed: Annotated[int | None, typer.Option(help="Seed, for the same video again.")] = None,
          variants: Annotated[int, typer.Option("--variants", min=1, help="Make N remixes in one task.")] = 1,
          output: Output = files.DEFAULT_TEMPLATE, no_wait: NoWait = False, timeout: Timeout = None,
          server: Server = None, token: Token = None, max_outage: MaxOutage = None,
          as_json: Json = False) -> None:
    """Remix a video with a new PROMPT, follow it and download the result."""
    if seconds is not None and frames is not None:
        fail("give --seconds or --frames, not both", code=2)
    n_frames = frames if frames is not None else (round(seconds * 30) if seconds is not None else None)
    fields = dict(strength=strength, orientation=orientation, size=size, model=model, seed=seed,
                  n_frames=n_frames, variants=variants)
    run_and_fetch(server, token, max_outage, output, lambda: Core.remix_body(target, prompt, **fields),
                  lambda client, body: client.remix(target, prompt, **fields), no_wait, timeout, as_json)


def extend(gen_id: Annotated[str, typer.Argument(metavar="GEN", help="A draft of yours (gen_...).")],
           prompt: Annotated[str, typer.Argument(help="What happens next (default: more of the same).")] = "",
           seconds: Annotated[float, typer.Option(min=0.1, help="Seconds to add.")] = 10.0,
           output: Output = files.DEFAULT_TEMPLATE, no_wait: NoWait = False, timeout: Timeout = None,
           server: Server = None, token: Token = None, max_outage: MaxOutage = None,
           as_json: Json = False) -> None:
    """Continue a video by --seconds; downloads the source and its continuation as one video."""
    run_and_fetch(server, token, max_outage, output,
                  lambda: {"prompt": prompt or None, **Core.extend_body(seconds, prompt)},
                  lambda client, body: client.extend(gen_id, seconds, prompt), no_wait, timeout, as_json)


def storyboard(file: Annotated[Path, typer.Argument(metavar="FILE", help="Shots: a text or .toml file "
                                                    "(see above).", show_default=False)],
               instructions: Annotated[str | None, typer.Option(help="Notes for the whole video.")] = None,
               orientation: Annotated[str | None, typer.Option(help="portrait, landscape or square.")] = None,
               size: Annotated[str | None, typer.Option(help="small or large.")] = None,
               model: Annotated[str | None, typer.Option(help="Model id.")] = None,
               seed: Annotated[int | None, typer.Option(help="Seed, for the same video again.")] = None,
               output: Output = files.DEFAULT_TEMPLATE, no_wait: NoWait = False, timeout: Timeout = None,
               server: Server = None, token: Token = None, max_outage: MaxOutage = None,
               as_json: Json = False) -> None:
    try:
        board = read_storyboard(file)
    except StoryboardFileError as exc:
        fail(str(exc), code=2)
    shots = board.pop("shots")
    given = {"instructions": instructions, "orientation": orientation, "size": size, "model": model,
             "seed": seed}
    options = {**board, **{k: v for k, v in given.items() if v is not None}}
    if "style" in options:
        options["style_id"] = options.pop("style")
    fields = {"orientation": "portrait", "size": "small", "model": "sy_8", **options}
    run_and_fetch(server, token, max_outage, output, lambda: Core.storyboard_body(shots, **fields),
                  lambda client, body: client.storyboard(shots, **fields), no_wait, timeout, as_json)


storyboard.__doc__ = STORYBOARD_HELP


def share(gen_id: Annotated[str, typer.Argument(metavar="GEN", help="A draft of yours (gen_...).")],
          text: Annotated[str, typer.Option("--text", help="The post's text.")] = "",
          server: Server = None, token: Token = None, max_outage: QuickMaxOutage = None,
          as_json: Json = False) -> None:
    """Post a draft under a public permalink (anyone with the link can watch it) and print the link."""
    try:
        with _connect(server, token, max_outage) as conn:
            post = conn.client.share(gen_id, text)
    except errors.SoraError as exc:
        client_error_exit(exc)
    if as_json:
        typer.echo(json.dumps(post, default=str))
    else:
        typer.echo(post.get("permalink") or post["id"])
        typer.echo(f"post {post['id']}; take it down with: sorakit unshare {post['id']}", err=True)


def unshare(post_id: Annotated[str, typer.Argument(metavar="POST", help="A post of yours (s_...).")],
            server: Server = None, token: Token = None, max_outage: QuickMaxOutage = None,
            as_json: Json = False) -> None:
    """Take a post down: its permalink stops working (the draft stays)."""
    try:
        with _connect(server, token, max_outage) as conn:
            answer = conn.client.unshare(post_id)
    except errors.SoraError as exc:
        client_error_exit(exc)
    typer.echo(json.dumps(answer, default=str) if as_json else f"{post_id}: deleted")


def _connect(server: str | None, token: str | None, max_outage: float | None):
    return connect(server, token, max_outage=max_outage, default_outage=QUICK_OUTAGE, on_outage=print_outages())
