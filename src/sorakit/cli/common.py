"""What every command group shares: the --data-dir option, settings, errors turned into exits."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import ConfigError, Settings, load_settings

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default: the "
                                              "platform's user data dir, or SORAKIT_DATA_DIR).",
                                              show_default=False)]
_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def settings(**flags: Any) -> Settings:
    try:
        return load_settings(flags)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", code=2)


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def parse_ttl(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` or plain seconds."""
    found = _TTL.match(text)
    if not found or float(found.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 30d, 12h, 90m or 3600")
    return float(found.group(1)) * _UNITS[found.group(2)]


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
