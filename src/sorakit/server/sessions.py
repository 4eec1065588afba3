"""Web sign-in: scrypt passwords, server-side sessions behind a NextAuth-style cookie, and the
slowing down of repeated failures (PROTOCOL section 1).

The cookie holds a random value; the store keeps only its SHA-256, so the sessions table alone
signs nobody in. Each session has one bearer token, minted at sign-in with the session's expiry
and revoked when the session ends, so ``/backend`` stops accepting it at the moment the cookie
stops working. The web app gets that token from ``GET /api/auth/session``, as it did from the
real service.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import math
import os
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from starlette.requests import Request

from ..config import Settings
from ..protocol.errors import ApiError
from . import auth
from .links import link_base, trusted
from .services import Services

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
MIN_PASSWORD_CHARS = 8
SESSION_SECONDS = 30 * 86400.0

SECURE_COOKIE = "__Secure-next-auth.session-token"
PLAIN_COOKIE = "next-auth.session-token"
COOKIE_NAMES = (SECURE_COOKIE, PLAIN_COOKIE)
# Browsers keep Secure cookies set over plain http on these hosts (they count as secure contexts).
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}

USER_LIMIT, ADDRESS_LIMIT = 5, 20  # failures within FAILURE_WINDOW before sign-in is locked
FAILURE_WINDOW = 15 * 60.0
FIRST_LOCK, MAX_LOCK = 30.0, 15 * 60.0  # the lock doubles with each further failure, up to MAX_LOCK


# -- errors ------------------------------------------------------------------------------------
def wrong_credentials() -> ApiError:
    return ApiError(401, "invalid_credentials", "Wrong username or password.")


def too_many_attempts(retry_after: int) -> ApiError:
    return ApiError(429, "too_many_signin_attempts", "Too many failed sign-ins. Please wait "
                    f"{retry_after} seconds before trying again.", type="rate_limit_error",
                    headers={"Retry-After": str(retry_after)})


def cross_site() -> ApiError:
    return ApiError(403, "cross_site_request", "This request came from another site.")


# -- passwords ---------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, size: int = HASH_BYTES) -> bytes:
    # NFKC: the same password typed on two keyboards (composed or decomposed accents) is one password.
    data = unicodedata.normalize("NFKC", password).encode("utf-8", "surrogatepass")
    return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, dklen=size, maxmem=256 * r * (n + p + 2))


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64): the parameters travel with the hash, so they can grow
    later without breaking the passwords already set."""
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        n, r, p = int(n), int(r), int(p)
        salt, digest = base64.b64decode(salt, validate=True), base64.b64decode(digest, validate=True)
    except ValueError:
        return None
    # bounds a damaged row cannot push past: memory (128 * n * r bytes) stays under 64 MB
    sane = n > 1 and n & (n - 1) == 0 and 0 < r and n * r <= 2**19 and 0 < p <= 16
    sane = sane and scheme == "scrypt" and salt and 16 <= len(digest) <= 64
    return (n, r, p, salt, digest) if sane else None


# Checked in place of a missing hash. Random bytes stand in for a digest: no password gives it,
# and nothing needs computing ahead, so even the first check costs exactly one scrypt.
_DUMMY = "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(os.urandom(SALT_BYTES)),
                   _b64(os.urandom(HASH_BYTES))])


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``. Without a usable hash (no such user, no password
    set) a dummy one is checked instead, so every wrong answer takes as long as a right one."""
    parsed = _parse(stored) if stored else None
    n, r, p, salt, expected = parsed or _parse(_DUMMY)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(expected)), expected) and bool(parsed)


# -- where a request comes from ----------------------------------------------------------------
def _origin(url: str | None) -> str | None:
    """``scheme://host[:port]`` with case and default ports normalised, or None if not http(s)."""
    try:
        parts = urlsplit((url or "").strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port and port != {"http": 80, "https": 443}[scheme] else "")


def browser_origin(request: Request, settings: Settings) -> str:
    """The origin the browser sent this request to: the request's own (forwarded headers believed
    from trusted proxies only), or ``public_base_url`` when the request names that host (a TLS
    proxy that passes Host through, with no trusted_proxies configured)."""
    own = _origin(link_base(request, None, settings.trusted_proxies)) or "http://localhost"
    public = _origin(settings.public_base_url)
    if public and urlsplit(public).netloc == urlsplit(own).netloc:
        return public
    return own


def check_origin(request: Request, settings: Settings) -> None:
    """Refuse a request a page of another site made (login CSRF, forced sign-out). Requests without
    an Origin (curl, scripts) are not a browser's cross-site requests, and pass."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise cross_site()
    origin = request.headers.get("origin")
    if origin is None:
        return
    allowed = {_origin(link_base(request, None, settings.trusted_proxies)),
               _origin(settings.public_base_url)} - {None}
    if _origin(origin) not in allowed:
        raise cross_site()


def client_address(request: Request, settings: Settings) -> str | None:
    """The address failures are counted against: the peer, or behind trusted proxies the nearest
    X-Forwarded-For entry that is not one of them (anything further left the client could forge)."""
    peer = request.client.host if request.client else None
    if not trusted(peer, settings.trusted_proxies):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    while hops and trusted(hops[-1], settings.trusted_proxies):
        hops.pop()
    return hops[-1] if hops else peer


def cookie_for(request: Request, settings: Settings) -> tuple[str, bool]:
    """NextAuth's rule: the ``__Secure-`` name, with Secure, only where the browser will keep it."""
    parts = urlsplit(browser_origin(request, settings))
    secure = parts.scheme == "https" or parts.hostname in LOCAL_HOSTS
    return (SECURE_COOKIE if secure else PLAIN_COOKIE), secure


def cookie_values(request: Request) -> list[str]:
    """The session cookie's values under either name, whole or split into ``.0``, ``.1`` chunks."""
    cookies, found = request.cookies, []
    for name in COOKIE_NAMES:
        chunks = [cookies[f"{name}.{i}"] for i in range(10) if f"{name}.{i}" in cookies]
        value = cookies.get(name) or "".join(chunks)
        if value:
            found.append(value)
    return found


# -- slowing down repeated failures ------------------------------------------------------------
def _address_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"ip:{address[:200]}"
    ip = getattr(ip, "ipv4_mapped", None) or ip
    if ip.version == 6:  # one IPv6 client holds a whole /64
        return f"ip:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"ip:{ip}"


def failure_limits(username: str, address: str | None) -> dict[str, int]:
    """The counters one attempt touches, each with its limit. Names are counted case-blind, so
    ``Ada`` and ``ada`` share one counter."""
    limits = {f"user:{username.lower()[:200]}": USER_LIMIT}
    if address:
        limits[_address_key(address)] = ADDRESS_LIMIT
    return limits


def _lock_until(count: int, limit: int, now: float) -> float | None:
    if count < limit:
        return None
    return now + min(FIRST_LOCK * 2 ** min(count - limit, 10), MAX_LOCK)


def _count_attempt(limits: dict[str, int], rows: dict, now: float) -> dict:
    """Count an attempt before its outcome is known, so attempts sent at once cannot all slip in
    before the first failure is recorded; refuse it outright while a lock holds."""
    wait = max([r["locked_until"] - now for r in rows.values() if r and (r["locked_until"] or 0) > now],
               default=0)
    if wait > 0:
        raise too_many_attempts(math.ceil(wait))
    counted = {}
    for key, row in rows.items():
        count = (row["count"] if row else 0) + 1
        counted[key] = {"count": count, "first_at": row["first_at"] if row else now,
                        "locked_until": _lock_until(count, limits[key], now)}
    return counted


def _undo_attempt(limits: dict[str, int], rows: dict, now: float) -> dict:
    """After a success: the user's counter is cleared; the address only loses this attempt."""
    undone = {}
    for key, row in rows.items():
        if row is None:
            continue
        count = 0 if key.startswith("user:") else row["count"] - 1
        lock = row["locked_until"] if count >= limits[key] else None
        undone[key] = {**row, "count": count, "locked_until": lock} if count else None
    return undone


# -- signing in and out ------------------------------------------------------------------------
@dataclass(frozen=True)
class SignedIn:
    user: dict
    session: dict
    cookie: str  # the cookie's value: handed to the browser once, kept only as its hash


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()


def sign_in(services: Services, username: str, password: str, address: str | None) -> SignedIn:
    """A new session for the user, or 401 ``invalid_credentials`` (also for a disabled user: the
    answer says nothing of who exists), or 429 while failures lock the name or the address."""
    store, limits = services.store, failure_limits(username, address)
    store.change_signin_failures(list(limits), functools.partial(_count_attempt, limits), FAILURE_WINDOW)
    user = store.user_by_name(username)
    matches = verify_password(password, user["password_hash"] if user else None)
    if not matches or user["disabled_at"] is not None:
        raise wrong_credentials()
    store.change_signin_failures(list(limits), functools.partial(_undo_attempt, limits), FAILURE_WINDOW)
    cookie = secrets.token_urlsafe(32)
    session, _token = store.create_session(user["id"], _digest(cookie), SESSION_SECONDS)
    return SignedIn(user=user, session=session, cookie=cookie)


def sign_out(services: Services, cookie: str) -> bool:
    """End the session a cookie value stands for, and revoke its token."""
    found = services.store.session_by_hash(_digest(cookie))
    return found is not None and services.store.end_session(found[0]["id"])


def public_user(user: dict) -> dict:
    email = user.get("email") or f"{user['name']}@sorakit.local"
    return {"id": user["id"], "name": user["name"], "email": email, "image": None}


def _iso(ts: float) -> str:
    # NextAuth's form: milliseconds and a Z
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _answer(user: dict, access_token: str, expires: float) -> dict:
    return {"user": public_user(user), "expires": _iso(expires), "accessToken": access_token,
            "authProvider": "sorakit"}


def _from_token(services: Services, token: str) -> dict | None:
    """A cookie holding a sorakit token itself (set by hand, as before sessions existed)."""
    try:
        user = auth.authenticate(services.store, services.jwt_key, f"Bearer {token}")
    except ApiError:
        return None
    return _answer(user, token, auth.expiry(token))


def session_answer(services: Services, cookie: str) -> dict | None:
    """What ``GET /api/auth/session`` answers for a cookie value, or None when it signs nobody in."""
    if cookie.count(".") == 2:
        return _from_token(services, cookie)
    found = services.store.session_by_hash(_digest(cookie))
    if found is None:
        return None
    session, user, token = found
    now = services.store.clock()
    live = (session["ended_at"] is None and session["expires_at"] > now and user["disabled_at"] is None
            and token["revoked_at"] is None)
    # the token is encoded again from its row: the same claims give the same JWT, so none is stored
    return _answer(user, auth.encode(services.jwt_key, token), session["expires_at"]) if live else None
