"""``sorakit serve``: the API server with its in-process workers."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import DatabaseUrl, DataDir, Media, open_services, settings, write_private

if TYPE_CHECKING:  # the server loads when it is used, not for `sorakit serve --help`
    from ..config import Settings
    from ..server.services import Services

LOCAL_USER = "local"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
LOCAL_TOKEN_TTL = 365 * 86400.0
LOCAL_PASSWORD = "local.password"


def ensure_local_user(services: Services) -> Path | None:
    """On a first start (no users at all), make user ``local`` and write its token file; returns
    that file's path then. User ``local`` also gets a password for the web app, see below."""
    from ..server import auth
    from ..store import NameTaken

    store = services.store
    path = None
    if store.count_users() == 0:
        try:
            user = store.create_user(LOCAL_USER)
        except NameTaken:  # another API node of the same database made it first
            user = None
        if user is not None:
            token, _ = auth.issue(store, services.jwt_key, user["id"], LOCAL_TOKEN_TTL)
            path = services.settings.data_dir / "local.token"
            write_private(path, token + "\n")
    ensure_local_password(services)
    return path


def ensure_local_password(services: Services) -> None:
    """Give user ``local`` a generated password in ``local.password`` when it has none: on a first
    start, and in a data dir made before the web app existed."""
    from ..server import sessions

    user = services.store.user_by_name(LOCAL_USER)
    if user is None or user["password_hash"]:
        return
    password = secrets.token_urlsafe(12)
    # the file first: if we stop between the two, local still has no password and the next start
    # makes a new one, rather than leaving a password set that no file tells
    path = services.settings.data_dir / LOCAL_PASSWORD
    write_private(path, password + "\n")
    if services.store.set_password(user["id"], sessions.hash_password(password), only_if_unset=True) < 0:
        path.unlink(missing_ok=True)  # another node of the same database gave it one first


def local_password_file(services: Services) -> Path | None:
    """``local.password``, if the password in it signs ``local`` in (not changed since, not disabled)."""
    from ..server import sessions

    path = services.settings.data_dir / LOCAL_PASSWORD
    user = services.store.user_by_name(LOCAL_USER)
    if user is None or user["disabled_at"] is not None or not path.is_file():
        return None
    return path if sessions.verify_password(path.read_text().strip(), user["password_hash"]) else None


def browser_url(s: Settings) -> str:
    """The address to open in a browser: public_base_url, or where we listen (a wildcard
    address names this machine's loopback)."""
    if s.public_base_url:
        return s.public_base_url.rstrip("/") + "/"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(s.host, s.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{s.port}/"


def local_token(services: Services) -> str:
    """A working token of user ``local`` from ``local.token``, minted anew when missing or dead."""
    from ..protocol.errors import ApiError
    from ..server import auth

    path = services.settings.data_dir / "local.token"
    if path.is_file():
        token = path.read_text().strip()
        try:
            auth.authenticate(services.store, services.jwt_key, f"Bearer {token}")
            return token
        except ApiError:
            pass
    user = services.store.user_by_name(LOCAL_USER) or services.store.create_user(LOCAL_USER)
    token, _ = auth.issue(services.store, services.jwt_key, user["id"], LOCAL_TOKEN_TTL)
    write_private(path, token + "\n")
    return token


def run_server(s: Settings, services: Services) -> None:
    import uvicorn

    from ..server.app import create_app, uvicorn_options

    app = create_app(s, services=services)
    uvicorn.run(app, host=s.host, port=s.port, log_level="info", **uvicorn_options(s))


def serve(host: Annotated[str | None, typer.Option(help="Interface to listen on [127.0.0.1].")] = None,
          port: Annotated[int | None, typer.Option(help="Port [8000].")] = None,
          data_dir: DataDir = None,
          workers: Annotated[int | None, typer.Option(
              min=0, help="Worker processes to start [1]; 0 for an API-only node of a fleet.")] = None,
          database_url: DatabaseUrl = None,
          media: Media = None,
          preview_pace: Annotated[float | None, typer.Option(
              min=0, help="Minimum seconds per preview video, to watch the lifecycle [0].")] = None,
          public_base_url: Annotated[str | None, typer.Option(
              help="Base URL of links when behind a reverse proxy.")] = None) -> None:
    """Run the Sora-compatible API server."""
    from ..store.db import redacted

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = settings(host=host, port=port, data_dir=data_dir, workers=workers, preview_pace=preview_pace,
                 public_base_url=public_base_url, database_url=database_url, media=media)
    services = open_services(s)
    token_file = ensure_local_user(services)
    if token_file:
        typer.echo(f"First start: created user '{LOCAL_USER}'; its token is in {token_file}")
    if not s.public_base_url and s.host not in LOOPBACK:
        typer.echo("Note: links will name the host each request was sent to; behind a proxy or on a "
                   "network, set --public-base-url (and trusted_proxies) so they name the right one.")
    where = f"database {redacted(s.database_url)}" if s.database_url else f"data in {s.data_dir}"
    typer.echo(f"sorakit serving on http://{s.host}:{s.port} ({where}, {s.workers} worker(s), docs at /docs)")
    password_file = local_password_file(services)
    if password_file:  # last, where a newcomer looks
        typer.echo(f"Open {browser_url(s)} and sign in as '{LOCAL_USER}' with the password in "
                   f"{password_file}")
    run_server(s, services)
