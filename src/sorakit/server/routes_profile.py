"""The signed-in profile, the sentinel stand-in and prompt enhancement (PROTOCOL sections 1, 2).

- ``GET /backend/me`` and ``GET /backend/authenticate``: the token's user.
- ``POST /backend-api/sentinel/req``: clients written for the live service fetch an anti-bot token
  from ChatGPT before each create. sorakit checks no such token, so this answers one of its own
  that says so; nothing of the real service's checks is solved or imitated.
- ``POST /backend/editor/enhance_prompt``: a richer prompt, written by the chat model the operator
  configured (``enhance.py``).
"""

from __future__ import annotations

import secrets
import threading

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ..protocol import errors
from ..protocol.models import NAME, TEXT
from . import enhance
from .bodies import json_body, openapi_body
from .deps import current_user, get_services
from .openapi import ENVELOPE_REF
from .routes_posts import refuse_term
from .services import Services

router = APIRouter(tags=["profile"])
#: enhancer calls at once in this process; past it, 503 with Retry-After (the rest of the API keeps
#: its threads)
ENHANCING = threading.BoundedSemaphore(4)


def profile(user: dict, services: Services) -> dict:
    """The user as ``/backend/me`` shows them: every key always present."""
    return {"id": user["id"], "username": user["name"], "name": user["name"], "email": user.get("email"),
            "created_at": user["created_at"], "picture": None, "image": None, "plan": "sorakit",
            "daily_limit": services.quota.daily_limit(user),
            "concurrency_limit": services.quota.concurrency(user)}


@router.get("/backend/me")
def me(user: dict = Depends(current_user), services: Services = Depends(get_services)) -> dict:
    """The signed-in user (clients read ``email``, ``name`` and ``username``)."""
    return profile(user, services)


@router.get("/backend/authenticate")
def authenticate(user: dict = Depends(current_user), services: Services = Depends(get_services)) -> dict:
    """Checks the token; some clients call it before each generation. Same body as ``/backend/me``."""
    return profile(user, services)


SENTINEL_BODY = {"requestBody": {"required": False, "content": {"application/json": {
    "schema": {"type": "object", "additionalProperties": True}}}}}


@router.post("/backend-api/sentinel/req", openapi_extra=SENTINEL_BODY)
async def sentinel(request: Request) -> dict:
    """A token for clients that insist on fetching one. sorakit requires no sentinel token: this
    one only says so, and any body is accepted (within the server's body limit) and ignored."""
    await request.body()  # read, so the body-limit middleware counts it, then dropped
    return {"token": f"sorakit-no-sentinel-{secrets.token_hex(16)}", "persona": "chatgpt-freeaccount",
            "turnstile": {"required": False, "dx": None},
            "proofofwork": {"required": False, "seed": None, "difficulty": None}}


class EnhanceRequest(BaseModel):
    """``POST /backend/editor/enhance_prompt``. Unknown keys are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1, max_length=TEXT)
    expansion_level: str | None = Field("medium", max_length=NAME)  # short | medium | long
    duration_s: float | None = Field(None, gt=0, le=3600, allow_inf_nan=False)


ENHANCE_ERRORS = {502: {"description": "The configured chat endpoint failed, timed out or answered "
                                       "no chat completion (`prompt_enhancer_failed`).",
                        "content": {"application/json": {"schema": {"$ref": ENVELOPE_REF}}}}}


@router.post("/backend/editor/enhance_prompt", openapi_extra=openapi_body(EnhanceRequest),
             responses=ENHANCE_ERRORS)
def enhance_prompt(user: dict = Depends(current_user),
                   parsed: tuple[EnhanceRequest, dict] = Depends(json_body(EnhanceRequest)),
                   services: Services = Depends(get_services)) -> dict:
    """A richer version of ``prompt`` from the operator's chat model; 400
    ``prompt_enhancer_not_configured`` when there is none."""
    body, _raw = parsed
    refuse_term(services, body.prompt, "The prompt", "prompt")
    # A slow chat server must not hold every worker thread of the API: a few calls at a time.
    if not ENHANCING.acquire(blocking=False):
        raise errors.heavy_load(5)
    try:
        text = enhance.enhance(services.settings, body.prompt, body.expansion_level, body.duration_s)
    finally:
        ENHANCING.release()
    refuse_term(services, text, "The enhanced prompt the model wrote", "prompt")
    return {"enhanced_prompt": text}
