"""``sorakit serve``: the API server with its in-process workers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ..config import Settings
from ..protocol.errors import ApiError
from ..server import auth
from ..server.services import Services, build_services
from .common import DataDir, settings, write_private

LOCAL_USER = "local"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
LOCAL_TOKEN_TTL = 365 * 86400.0


def ensure_local_user(services: Services) -> Path | None:
    """On a first start (no users at all), make user ``local`` and write its token file."""
    store = services.store
    if store.count_users() > 0:
        return None
    user = store.create_user(LOCAL_USER)
    token, _ = auth.issue(store, services.jwt_key, user["id"], LOCAL_TOKEN_TTL)
    path = services.settings.data_dir / "local.token"
    write_private(path, token + "\n")
    return path


def local_token(services: Services) -> str:
    """A working token of user ``local`` from ``local.token``, minted anew when missing or dead."""
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
          workers: Annotated[int | None, typer.Option(min=0, help="In-process workers [1].")] = None,
          preview_pace: Annotated[float | None, typer.Option(
              min=0, help="Minimum seconds per preview video, to watch the lifecycle [0].")] = None,
          public_base_url: Annotated[str | None, typer.Option(
              help="Base URL of links when behind a reverse proxy.")] = None) -> None:
    """Run the Sora-compatible API server."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = settings(host=host, port=port, data_dir=data_dir, workers=workers, preview_pace=preview_pace,
                 public_base_url=public_base_url)
    services = build_services(s)
    token_file = ensure_local_user(services)
    if token_file:
        typer.echo(f"First start: created user '{LOCAL_USER}'; its token is in {token_file}")
    if not s.public_base_url and s.host not in LOOPBACK:
        typer.echo(f"Note: links will name the host each request was sent to; behind a proxy or on a "
                   f"network, set --public-base-url (and trusted_proxies) so they name the right one.")
    typer.echo(f"sorakit serving on http://{s.host}:{s.port} (data in {s.data_dir}, "
               f"{s.workers} worker(s), docs at /docs)")
    run_server(s, services)
