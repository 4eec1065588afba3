"""``/v1/videos``: the official Videos API (PROTOCOL section 7), for apps written for the openai SDKs.

Shapes and rules live in ``v1.py``; this module only reads requests and answers them.
"""

from __future__ import annotations

import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..protocol import bounds, errors
from ..protocol.errors import ApiError
from . import v1
from .bodies import parse_json, validate
from .deps import current_user, get_services
from .routes_assets import drop_malformed_range
from .services import Services

router = APIRouter(prefix="/v1/videos", tags=["videos (official API)"])
#: a JSON body's data URL may use the whole JSON body limit (multipart takes larger images)
JSON_LIMITS = bounds.Limits(long_strings=(("input_reference.image_url", 10 * 1024 * 1024),))
FORM_FIELDS = ("prompt", "model", "seconds", "size")
CONTENT = {"video": ("video_file", "video/mp4"), "thumbnail": ("thumbnail_file", "image/webp"),
           "spritesheet": ("spritesheet_file", "image/jpeg")}


# -- reading the create request ----------------------------------------------------------------
async def _form(request: Request, services: Services) -> tuple[v1.VideoCreate, v1.Reference]:
    # A data URL may travel as a form field: base64 of an image as large as an upload may be
    # (the body limit still caps the whole request at upload_max_bytes plus a little).
    room = services.settings.upload_max_bytes * 4 // 3 + 1024
    try:
        form = await request.form(max_files=1, max_fields=32, max_part_size=room)
    except (ApiError, HTTPException):  # 413 from the body limit, among others: pass it on
        raise
    except Exception:  # starlette's multipart errors carry no stable type across versions
        raise errors.invalid_request("The multipart form could not be read.") from None
    fields: dict[str, Any] = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
    part = form.get("input_reference")
    ref = v1.Reference(part=part if isinstance(part, UploadFile) else None,
                       data_url=fields.pop("input_reference[image_url]", None),
                       file_id=fields.pop("input_reference[file_id]", None))
    fields.pop("input_reference", None)
    return validate(v1.VideoCreate, fields), ref


async def create_body(request: Request, services: Services = Depends(get_services)):
    """``(VideoCreate, Reference)`` from multipart (the SDKs), a form, or JSON (older callers)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await _form(request, services)
    req = validate(v1.VideoCreate, parse_json(await request.body()), JSON_LIMITS)
    ref = req.input_reference or v1.ImageReference()
    return req, v1.Reference(data_url=ref.image_url, file_id=ref.file_id)


def _create_doc() -> dict:
    schema = v1.VideoCreate.model_json_schema()
    form = {"type": "object", "required": ["prompt"],
            "properties": {**{k: {"type": "string"} for k in FORM_FIELDS},
                           "input_reference": {"type": "string", "format": "binary"}}}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": form}, "application/json": {"schema": schema}}}}


# -- routes -------------------------------------------------------------------------------------
@router.post("", openapi_extra=_create_doc())
def create_video(user: dict = Depends(current_user),
                 parsed=Depends(create_body), services: Services = Depends(get_services),
                 idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                                               max_length=255)] = None,
                 retry_count: Annotated[int, Header(alias="x-stainless-retry-count", ge=0)] = 0) -> dict:
    """Start a video: `prompt`, `model` (sora-2, sora-2-pro), `seconds`, `size`, `input_reference`."""
    req, ref = parsed
    try:
        task = v1.submit(services, user, req, ref, idempotency_key, retry_count)
    finally:
        if ref.part is not None:  # the spooled file part, on disk past 1 MB
            ref.part.file.close()
    return v1.video(task, services.store.generations_for([task["id"]])[task["id"]])


def _not_yet(what: str) -> ApiError:
    return errors.invalid_request(f"{what} is not supported by this server yet.", None)


# Registered before /{video_id}: "characters" must not be taken for a video id. Each answers a
# 400 in the envelope (never a 404 an SDK would take for a missing video) until remix lands.
@router.post("/characters")
def create_character(user: dict = Depends(current_user)) -> dict:
    """Not supported yet: a 400."""
    raise _not_yet("Creating characters")


@router.get("/characters/{character_id}")
def get_character(character_id: str, user: dict = Depends(current_user)) -> dict:
    """Not supported yet: a 400."""
    raise _not_yet("Characters")


@router.post("/edits")
def edit_video(user: dict = Depends(current_user)) -> dict:
    """Not supported yet: a 400."""
    raise _not_yet("Editing videos")


@router.post("/extensions")
def extend_video(user: dict = Depends(current_user)) -> dict:
    """Not supported yet: a 400."""
    raise _not_yet("Extending videos")


@router.post("/{video_id}/remix")
def remix_video(video_id: str, user: dict = Depends(current_user)) -> dict:
    """Not supported yet: a 400."""
    raise _not_yet("Remixing videos")


@router.get("/{video_id}")
def retrieve_video(video_id: str, user: dict = Depends(current_user),
                   services: Services = Depends(get_services)) -> JSONResponse:
    """One video; `openai-poll-after-ms` says when to look again while it is unfinished."""
    row = v1.own_task(services, user, video_id)
    body = v1.video(row, services.store.generations_for([row["id"]])[row["id"]])
    after = v1.poll_after_ms(body["status"])
    return JSONResponse(body, headers={"openai-poll-after-ms": after} if after else None)


def _cursor(services: Services, user: dict, after: str | None) -> tuple[float, str] | None:
    if after is None:
        return None
    row = services.store.task(v1.task_id(after), user["id"]) if after.startswith("video_") else None
    if row is None:
        raise errors.invalid_request("after names no video of yours.", "after")
    return row["created_at"], row["id"]


@router.get("")
def list_videos(user: dict = Depends(current_user), services: Services = Depends(get_services),
                limit: Annotated[int, Query(ge=0, le=100)] = 20,
                order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
                after: Annotated[str | None, Query(max_length=200)] = None) -> dict:
    """The caller's videos (from either API), `limit` per page, then `after` the last id."""
    rows = services.store.tasks_page(user["id"], limit + 1, order == "desc", _cursor(services, user, after))
    page = rows[:limit]
    gens = services.store.generations_for(r["id"] for r in page)
    data = [v1.video(r, gens[r["id"]]) for r in page]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(rows) > limit}


@router.delete("/{video_id}")
def delete_video(video_id: str, user: dict = Depends(current_user),
                 services: Services = Depends(get_services)) -> dict:
    """Delete a video and its files (an unfinished one is stopped)."""
    row = v1.own_task(services, user, video_id)
    services.store.request_cancel(row["id"], user["id"])
    gens = services.store.delete_task(row["id"], user["id"]) or []
    for gen in gens:
        shutil.rmtree(services.settings.media_dir / gen["id"], ignore_errors=True)
    return {"id": v1.video_id(row["id"]), "object": "video.deleted", "deleted": True}


@router.get("/{video_id}/content")
def video_content(video_id: str, request: Request, user: dict = Depends(current_user),
                  services: Services = Depends(get_services),
                  variant: Annotated[str, Query(pattern="^(video|thumbnail|spritesheet)$")] = "video"):
    """The MP4 (Range works), its WebP thumbnail, or a JPEG sprite sheet of its frames."""
    row = v1.own_task(services, user, video_id)
    drafts = [g for g in services.store.generations_for([row["id"]])[row["id"]] if g["kind"] == "sora_draft"]
    if row["status"] != "succeeded" or not drafts:
        raise errors.invalid_request(f"Video {video_id} is not completed (status "
                                     f"{v1.STATUS[row['status']]}); its content is not available.", "video_id")
    column, media_type = CONTENT[variant]
    name = drafts[0].get(column)
    path = services.settings.media_dir / name if name else None
    if path is None or not path.is_file():
        raise ApiError(404, "not_found", f"This video has no {variant}.", param="variant")
    drop_malformed_range(request)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
