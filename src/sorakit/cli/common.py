"""What every command group shares: the --data-dir option, settings, errors turned into exits."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ..config import Settings

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default: the "
                                              "platform's user data dir, or SORAKIT_DATA_DIR).",
                                              show_default=False)]
#: the fleet's shared pieces, as every command that opens the store or the media takes them
DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", help="The database, e.g. postgresql://sorakit@db/sorakit (default: the database_url "
    "setting, else the data dir's SQLite).", show_default=False)]
Media = Annotated[str | None, typer.Option(
    "--media", help="Where videos are kept: a directory or s3://bucket/prefix (default: the media setting, "
    "else <data dir>/media).",
    show_default=False)]
_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def settings(**flags: Any) -> Settings:
    from ..config import ConfigError, load_settings

    try:
        return load_settings(flags)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", code=2)


def open_services(s: Settings):
    """The server's services, or a one-line error when its database cannot be reached or opened
    (a wrong URL, a database that is down) instead of a driver's traceback."""
    from ..server.services import build_services

    return _opened(s, build_services)


def open_services_store(s: Settings):
    """The store of a server's settings, or a one-line error when its database cannot be opened."""
    from ..store import store_for

    return _opened(s, store_for)


def _opened(s: Settings, opener):
    from sqlalchemy.exc import DBAPIError

    from ..store.db import first_line, redacted

    try:
        return opener(s)
    except DBAPIError as exc:
        where = redacted(s.database_url) if s.database_url else str(s.db_path)
        fail(f"cannot open the database {where}: {first_line(exc.orig or exc, 500)}", code=2)
    except RuntimeError as exc:  # e.g. psycopg missing for a postgresql:// URL
        fail(str(exc), code=2)


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


NEVER_SECONDS = 100 * 365 * 86400.0  # "never": a JWT needs an exp; a century is as good as none


def parse_ttl(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, plain seconds, or ``never`` (an API key for an app)."""
    if text.strip().lower() == "never":
        return NEVER_SECONDS
    found = _TTL.match(text)
    if not found or float(found.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 30d, 12h, 90m, 3600 or never")
    return float(found.group(1)) * _UNITS[found.group(2)]


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


# Exit codes of the client commands (documented in the README).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_LIMIT = 0, 1, 2, 3, 4
EXIT_FAILED, EXIT_REFUSED, EXIT_CANCELLED, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 5, 6, 7, 8, 130


def exit_code_for(exc: Exception) -> int:
    from ..client import errors

    table = [(errors.AuthenticationError, EXIT_AUTH), (errors.RateLimitError, EXIT_LIMIT),
             (errors.ContentViolationError, EXIT_REFUSED), (errors.TaskCancelledError, EXIT_CANCELLED),
             (errors.TaskFailedError, EXIT_FAILED), (errors.BadRequestError, EXIT_USAGE),
             (errors.TransportError, EXIT_UNREACHABLE), (errors.ServerError, EXIT_UNREACHABLE)]
    return next((code for cls, code in table if isinstance(exc, cls)), EXIT_ERROR)


def client_error_exit(exc: Exception) -> None:
    """Turn a client error into its message and exit code (the traceback only with SORAKIT_DEBUG=1)."""
    if os.environ.get("SORAKIT_DEBUG") == "1":
        raise exc
    fail(str(exc), code=exit_code_for(exc))
