"""Signed, expiring asset links, shaped like Azure blob SAS URLs (``se``, ``sp``, ``sig``).

The signature is an HMAC over the path, the expiry and the permission, so neither can be altered.
Links are capability URLs: fetched with no credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from starlette.requests import Request

# A Host (or X-Forwarded-Host) value we are willing to put in a link: name or address, and port.
HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: str) -> float | None:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


class LinkSigner:
    def __init__(self, key: bytes, ttl_seconds: float) -> None:
        self.key = key
        self.ttl = ttl_seconds

    def _sig(self, path: str, se: str, sp: str) -> str:
        mac = hmac.new(self.key, f"{path}\n{se}\n{sp}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def sign(self, path: str, now: float | None = None, ttl: float | None = None) -> str:
        """``path?se=...&sp=r&sig=...``, valid for ``ttl`` seconds from ``now``."""
        expiry = (time.time() if now is None else now) + (self.ttl if ttl is None else ttl)
        se = _iso(expiry)
        return f"{path}?{urlencode({'se': se, 'sp': 'r', 'sig': self._sig(path, se, 'r')})}"

    def verify(self, path: str, se: str | None, sp: str | None, sig: str | None,
               now: float | None = None) -> str | None:
        """``None`` when the link is good, else the reason it is refused."""
        if not (se and sp and sig):
            return "Signature fields not well formed."
        # compare bytes: compare_digest refuses str with non-ASCII characters (a forged link may have them)
        given = sig.encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(self._sig(path, se, sp).encode(), given) or sp != "r":
            return "Signature did not match."
        expiry = _parse_iso(se)
        if expiry is None or expiry < (time.time() if now is None else now):
            return "Signed expiry time has passed."
        return None


def trusted(peer: str | None, proxies: list[str]) -> bool:
    """Is the connecting peer one of the configured proxies (IPs or CIDRs)?"""
    if not peer or not proxies:
        return False
    try:
        address = ipaddress.ip_address(peer)
        return any(address in ipaddress.ip_network(p, strict=False) for p in proxies)
    except ValueError:
        return False


def _first(value: str | None) -> str | None:
    return value.split(",")[0].strip() if value else None


def link_base(request: Request, public_base_url: str | None, proxies: list[str]) -> str:
    """Scheme and host of the links minted for this request.

    ``public_base_url`` decides when set. Otherwise a trusted proxy's ``X-Forwarded-Proto`` and
    ``X-Forwarded-Host`` are believed, and anyone else's ignored; then the request's own Host is
    used if it is a plain host[:port], and the address the server listens on if it is not.
    """
    if public_base_url:
        return public_base_url.rstrip("/")
    scheme, host = request.url.scheme, request.headers.get("host")
    peer = request.client.host if request.client else None
    if trusted(peer, proxies):
        scheme = _first(request.headers.get("x-forwarded-proto")) or scheme
        host = _first(request.headers.get("x-forwarded-host")) or host
    if scheme not in ("http", "https"):
        scheme = "http"
    if not host or not HOST.match(host):
        server = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scheme}://{host}"
