"""``/backend/project_y/profile/drafts*``: finished generations (PROTOCOL section 4)."""

from __future__ import annotations

import base64
import json
import math

from fastapi import APIRouter, Depends, Header, Query

from ..protocol import errors
from ..protocol.models import ExtensionRequest
from . import create, operations
from .bodies import json_body, openapi_body
from .deps import current_user, get_services, get_shaper
from .maintenance import delete_draft_files
from .services import Services
from .shapes import Shaper

router = APIRouter(prefix="/backend/project_y/profile", tags=["drafts"])


def encode_cursor(created_at: float, gen_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, gen_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created, gen_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        created = float(created)
        gen_id.encode("utf-8")
        if not math.isfinite(created) or not isinstance(gen_id, str):
            raise ValueError(cursor)
        return created, gen_id
    except Exception:  # anything a forged cursor can raise (overflow, recursion, encoding)
        raise errors.invalid_request("cursor is not one this server handed out.", "cursor") from None


@router.get("/drafts/v2")
@router.get("/drafts")
def drafts(limit: int = Query(15, ge=1, le=500), cursor: str | None = None,
           user: dict = Depends(current_user), services: Services = Depends(get_services),
           shaper: Shaper = Depends(get_shaper)) -> dict:
    """The caller's drafts, newest first, ``limit`` per page; ``cursor`` continues a listing."""
    after = decode_cursor(cursor) if cursor else None
    rows = services.store.drafts(user["id"], limit + 1, after)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
    return {"items": [shaper.draft(r) for r in page], "cursor": next_cursor}


def _own(services: Services, user: dict, gen_id: str) -> dict:
    row = services.store.generation(gen_id, user["id"])
    if row is None:
        raise errors.not_found("draft")
    return row


@router.get("/drafts/v2/{gen_id}")
@router.get("/drafts/{gen_id}")
def draft(gen_id: str, user: dict = Depends(current_user), services: Services = Depends(get_services),
          shaper: Shaper = Depends(get_shaper)) -> dict:
    return {"draft": shaper.draft(_own(services, user, gen_id))}


@router.delete("/drafts/v2/{gen_id}")
@router.delete("/drafts/{gen_id}")
def delete_draft(gen_id: str, user: dict = Depends(current_user),
                 services: Services = Depends(get_services)) -> dict:
    """Delete a draft and its files; its links stop working at once."""
    row = services.store.delete_generation(gen_id, user["id"])
    if row is None:
        raise errors.not_found("draft")
    delete_draft_files(services, gen_id)
    return {"id": gen_id, "deleted": True}


@router.post("/drafts/{gen_id}/long_video_extension", openapi_extra=openapi_body(ExtensionRequest))
def long_video_extension(gen_id: str, user: dict = Depends(current_user),
                         parsed: tuple[ExtensionRequest, dict] = Depends(json_body(ExtensionRequest)),
                         services: Services = Depends(get_services),
                         idempotency_key: str | None = Header(None, alias="Idempotency-Key", min_length=1,
                                                              max_length=255)) -> dict:
    """Continue a draft by ``extension_duration_s`` seconds; its new draft is one longer video
    (the source, then the extension). An empty ``user_prompt`` continues the source's prompt."""
    from .routes_nf import created

    body, raw = parsed
    raw = {**raw, "extend_of": gen_id}  # the key's body names the draft: another draft is another request
    row = operations.extension_row(services, user, gen_id, body.user_prompt, body.extension_duration_s,
                                   raw, model=body.model)
    return created(services, user, create.insert(services, user, row, raw, idempotency_key))
