"""Which server a client command talks to, with which credentials.

Server: ``--server`` > ``SORAKIT_SERVER`` > the saved config (``sorakit login``) > an embedded
server over the default data dir. Token: ``--token`` > ``SORAKIT_TOKEN`` > the saved config (for
its own server) > the data dir's ``local.token`` (embedded, or a server on this machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..client import RetryPolicy, SoraClient
from ..client import config as client_config
from ..client.embedded import EmbeddedServer
from ..config import load_settings
from .serve import local_token


@dataclass
class Connection:
    client: SoraClient
    server: str
    embedded: EmbeddedServer | None = None

    def close(self) -> None:
        self.client.close()
        if self.embedded is not None:
            self.embedded.stop()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def _local_token_file() -> str | None:
    path = load_settings().data_dir / "local.token"
    return path.read_text().strip() if path.is_file() else None


def connect(server: str | None = None, token: str | None = None, *, retry: RetryPolicy | None = None,
            poll_interval: tuple[float, float] = (2.0, 3.0)) -> Connection:
    saved = client_config.load()
    server = server or os.environ.get("SORAKIT_SERVER") or saved.get("server")
    embedded = None
    if not server:
        embedded = EmbeddedServer().start()
        server, token = embedded.url, token or local_token(embedded.services)
    saved_applies = saved.get("server", "").rstrip("/") == server.rstrip("/")
    token = (token or os.environ.get("SORAKIT_TOKEN") or (saved.get("token") if saved_applies else None)
             or (_local_token_file() if _is_loopback(server) else None))
    extra = {k: saved.get(k) for k in ("cookie", "device_id", "sentinel_token", "user_agent")} if saved_applies else {}
    client = SoraClient(server, token, retry=retry, poll_interval=poll_interval, **extra)
    return Connection(client, server.rstrip("/"), embedded)
