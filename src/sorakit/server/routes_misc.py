"""Health. (The web app's session refresh moved to ``routes_auth.py``.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()


@router.get("/healthz", tags=["health"])
def healthz() -> dict:
    return {"status": "ok"}
