"""Signed, expiring asset links, shaped like Azure blob SAS URLs (``se``, ``sp``, ``sig``).

The signature is an HMAC over the path, the expiry and the permission, so neither can be altered.
Links are capability URLs: fetched with no credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from urllib.parse import urlencode


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
        if not hmac.compare_digest(self._sig(path, se, sp), sig) or sp != "r":
            return "Signature did not match."
        expiry = _parse_iso(se)
        if expiry is None or expiry < (time.time() if now is None else now):
            return "Signed expiry time has passed."
        return None
