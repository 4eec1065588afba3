"""Bearer tokens (PROTOCOL section 1): JWTs signed by the server, with ``sub``, ``exp`` and ``jti``.

Each token's ``jti`` is a row in the store, so a token can be revoked; a disabled user's tokens
are all refused.

A token found good is believed for ``store.auth_cache``'s TTL (``AUTH_CACHE_SECONDS``, half a
second) without verifying it or asking the database again: every request of a poller costs a
dict lookup. A revocation, sign-out or disabled user made through this process's store drops the
cache at once; one made by another process (``sorakit token revoke``, a second server) takes
effect within the TTL.
"""

from __future__ import annotations

import time

import jwt

from ..protocol import errors
from ..store import Store

ALGORITHM = "HS256"


def encode(key: bytes, row: dict) -> str:
    """The JWT of a token row. The same row always gives the same JWT, so a session's token can be
    handed out again without keeping the JWT itself anywhere."""
    claims = {"sub": row["user_id"], "jti": row["id"], "iat": int(row["created_at"]),
              "exp": int(row["expires_at"])}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def issue(store: Store, key: bytes, user_id: str, ttl_seconds: float) -> tuple[str, dict]:
    row = store.create_token(user_id, ttl_seconds)
    return encode(key, row), row


def _bearer(header: str | None) -> str:
    if not header:
        raise errors.invalid_token("no Authorization header")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise errors.invalid_token("expected 'Bearer <token>'")
    return value.strip()


LEEWAY = 60  # seconds: a token minted on a host whose clock runs slightly ahead still works


def cached_user(store: Store, key: bytes, header: str | None) -> dict | None:
    """The user of a token verified within the cache's TTL, else None (then :func:`authenticate`,
    which may read the database). No I/O: an async caller may ask on the event loop."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    hit = store.auth_cache.get((key, value.strip()))
    if hit is None or hit[0] + LEEWAY < time.time():
        return None
    return dict(hit[1])  # a copy: the caller may change its user dict


def authenticate(store: Store, key: bytes, header: str | None) -> dict:
    """The user a request's Authorization header stands for, or an :class:`ApiError` 401."""
    found = cached_user(store, key, header)
    if found is not None:
        return found
    token = _bearer(header)
    cache = store.auth_cache
    # Taken before reading: what is read is believed for the TTL from now, not from whenever this
    # thread gets to store it, and never after a revocation made here meanwhile.
    stamp = cache.stamp()
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], leeway=LEEWAY,
                            options={"require": ["sub", "exp", "jti"]})
    except jwt.ExpiredSignatureError:
        raise errors.token_expired() from None
    except jwt.InvalidTokenError:
        raise errors.invalid_token() from None
    found = store.token_user(claims["jti"])
    if found is None or found[0]["revoked_at"] is not None or found[0]["user_id"] != claims["sub"]:
        raise errors.token_invalidated()
    if found[1]["disabled_at"] is not None:  # `sorakit users disable`: every token fails (within the TTL)
        raise errors.token_invalidated()
    cache.put((key, token), (float(claims["exp"]), found[1]), stamp)
    return dict(found[1])


def expiry(token: str) -> float:
    """The ``exp`` of a token, read without verifying (as clients do)."""
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])
