"""Which server a client command talks to, with which credentials, and how long it waits for it.

Server: ``--server`` > ``SORAKIT_SERVER`` > the saved config (``sorakit login``) > an embedded
server over the default data dir. Token: ``--token`` > ``SORAKIT_TOKEN`` > the saved config (for
its own server) > the data dir's ``local.token`` (embedded, or a server on this machine).
Outage: ``--max-outage`` > ``SORAKIT_MAX_OUTAGE`` > ``max_outage`` in the saved config > the
command's default (5 minutes for generate, download and batch; 10 s for status, list and usage).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from ..client.steps import RetryPolicy
from .common import fail

if TYPE_CHECKING:  # the rest loads when a command connects: not at every start (see main.py)
    from rich.console import Console

    from ..client import OutageEvent, SoraClient
    from ..client.embedded import EmbeddedServer

LONG_OUTAGE = RetryPolicy.max_outage  # generate, download, batch: worth waiting out a restart
QUICK_OUTAGE = 10.0  # status, list, usage: someone is waiting for a one-screen answer
REMOTE_POLL = (2.0, 3.0)  # seconds between polls of a server: the web page's cadence
#: the embedded server is ours, in this process: poll it often, so a command ends within a
#: fraction of a second of the video being ready (a poll costs it a few milliseconds)
EMBEDDED_POLL = 0.3


def max_outage_option(default: float):
    """The ``--max-outage`` option, its help naming this command's default."""
    return Annotated[float | None, typer.Option(
        "--max-outage", min=0.0, metavar="SECONDS", show_default=False,
        help=f"Keep retrying a server that stopped answering for up to SECONDS (default {default:g}; "
             "SORAKIT_MAX_OUTAGE, or max_outage in client.toml); 0: fail at once.")]


MaxOutage = max_outage_option(LONG_OUTAGE)
QuickMaxOutage = max_outage_option(QUICK_OUTAGE)


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
    from ..config import load_settings

    path = load_settings().data_dir / "local.token"
    return path.read_text().strip() if path.is_file() else None


def _seconds(value: float | str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None  # NaN fails this too


def outage_limit(flag: float | None, saved: dict[str, str], default: float) -> float:
    """Seconds to wait out an outage: the flag, the environment, the saved config, the default."""
    from ..client import config as client_config

    sources = (("--max-outage", flag), ("SORAKIT_MAX_OUTAGE", os.environ.get("SORAKIT_MAX_OUTAGE")),
               (f"max_outage in {client_config.config_path()}", saved.get("max_outage")))
    for where, value in sources:
        if value is None or value == "":
            continue
        seconds = _seconds(value)
        if seconds is None:
            fail(f"{where}: {value!r} is not a number of seconds (0 or more)", code=2)
        return seconds
    return default


def print_outages(console: Console | None = None) -> Callable[[OutageEvent], None]:
    """Outage reports as lines on stderr (through ``console``, so a live display stays whole)."""
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)

    def show(event: OutageEvent) -> None:
        console.print(event.message, style="yellow", markup=False, highlight=False, soft_wrap=True)

    return show


def connect(server: str | None = None, token: str | None = None, *, max_outage: float | None = None,
            default_outage: float = LONG_OUTAGE, on_outage: Callable[[OutageEvent], None] | None = None,
            retry: RetryPolicy | None = None, poll_interval: tuple[float, float] | None = None) -> Connection:
    """A client of the server to use (see the module's doc), started first when it is embedded.

    ``poll_interval``: seconds between polls while waiting; default ``REMOTE_POLL`` (slower
    while nothing moves), or every ``EMBEDDED_POLL`` s for the embedded server.
    """
    from ..client import SoraClient
    from ..client import config as client_config

    saved = client_config.load()
    retry = retry or RetryPolicy(max_outage=outage_limit(max_outage, saved, default_outage))
    server = server or os.environ.get("SORAKIT_SERVER") or saved.get("server")
    embedded, poll_max = None, 10.0
    if not server:
        from ..client.embedded import EmbeddedServer
        from .serve import local_token

        embedded = EmbeddedServer().start()
        server, token = embedded.url, token or local_token(embedded.services)
        poll_interval = poll_interval or (EMBEDDED_POLL, EMBEDDED_POLL)
        poll_max = max(poll_interval)  # no slowing down while nothing moves: it is a local call
    saved_applies = saved.get("server", "").rstrip("/") == server.rstrip("/")
    token = (token or os.environ.get("SORAKIT_TOKEN") or (saved.get("token") if saved_applies else None)
             or (_local_token_file() if _is_loopback(server) else None))
    extra = {k: saved.get(k) for k in ("cookie", "device_id", "sentinel_token", "user_agent")} if saved_applies else {}
    client = SoraClient(server, token, retry=retry, poll_interval=poll_interval or REMOTE_POLL, poll_max=poll_max,
                        on_outage=on_outage, **extra)
    return Connection(client, server.rstrip("/"), embedded)
