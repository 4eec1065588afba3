"""``sorakit login``: save a server URL and credentials for the client commands.

Reads a browser's "Copy as cURL" text from stdin too, keeping its Authorization, Cookie,
oai-device-id and User-Agent headers (the sentinel token is short-lived and is not kept).
"""

from __future__ import annotations

import re
import shlex
import sys
from typing import Annotated
from urllib.parse import urlsplit

import typer

from .common import fail

HEADER_KEYS = {"authorization": "token", "cookie": "cookie", "oai-device-id": "device_id",
               "user-agent": "user_agent"}


def parse_curl(text: str) -> dict[str, str]:
    """The server origin and credentials in a "Copy as cURL" command (bash or cmd quoting)."""
    text = re.sub(r"\\\r?\n|\^\r?\n", " ", text)
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot read that cURL command: {exc}") from None
    found: dict[str, str] = {}
    for flag, value in zip(words, words[1:]):
        if flag in ("-H", "--header") and ":" in value:
            name, _, val = value.partition(":")
            key = HEADER_KEYS.get(name.strip().lower())
            if key:
                found[key] = val.strip()
        elif flag in ("-b", "--cookie"):
            found["cookie"] = value
    url = next((w for w in words if w.startswith(("http://", "https://"))), None)
    if url:
        parts = urlsplit(url)
        found["server"] = f"{parts.scheme}://{parts.netloc}"
    if "token" in found:
        found["token"] = re.sub(r"^Bearer\s+", "", found["token"], flags=re.IGNORECASE)
    return found


def login(server: Annotated[str | None, typer.Option(help="API base URL.")] = None,
          token: Annotated[str | None, typer.Option(help="Bearer token.")] = None,
          from_curl: Annotated[bool, typer.Option("--from-curl", help="Read a browser's 'Copy as cURL' "
                                                  "text from stdin.")] = False) -> None:
    """Save the server and token (and browser headers) that client commands use."""
    from ..client import config as client_config

    values: dict[str, str] = {}
    if from_curl or (server is None and token is None and not sys.stdin.isatty()):
        try:
            values = parse_curl(sys.stdin.read())
        except ValueError as exc:
            fail(str(exc), code=2)
    values.update({k: v for k, v in (("server", server), ("token", token)) if v})
    if not values.get("server"):
        fail("give --server URL (or pipe a 'Copy as cURL' text)", code=2)
    path = client_config.save(values)
    kept = ", ".join(k for k in values if k != "server") or "no credentials"
    typer.echo(f"saved {values['server']} ({kept}) to {path}")
