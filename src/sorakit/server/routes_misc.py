"""Health, and the web app's session refresh (PROTOCOL section 1)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request

from ..protocol.errors import ApiError
from . import auth
from .deps import get_services
from .services import Services

router = APIRouter()
SESSION_COOKIE = "__Secure-next-auth.session-token"


@router.get("/healthz", tags=["health"])
def healthz() -> dict:
    return {"status": "ok"}


def _session_cookie(request: Request) -> str | None:
    cookies = request.cookies
    if SESSION_COOKIE in cookies:
        return cookies[SESSION_COOKIE]
    chunks = [cookies[f"{SESSION_COOKIE}.{i}"] for i in range(10) if f"{SESSION_COOKIE}.{i}" in cookies]
    return "".join(chunks) or None


@router.get("/api/auth/session", tags=["auth"])
def session(request: Request, services: Services = Depends(get_services)) -> dict:
    """With a sorakit token as the session cookie (whole or in ``.0``, ``.1`` chunks), answer it
    as ``accessToken``; otherwise 200 without one, as the web app did."""
    token = _session_cookie(request)
    if not token:
        return {}
    try:
        user = auth.authenticate(services.store, services.jwt_key, f"Bearer {token}")
    except ApiError:
        return {}
    expires = auth.expiry(token)
    return {"accessToken": token, "expires": datetime.fromtimestamp(expires, UTC).isoformat(),
            "user": {"id": user["id"], "name": user["name"]}}
