"""``/v1/videos``: the official Videos API (PROTOCOL section 7), for apps written for the openai SDKs.

Shapes and rules live in ``v1.py``; this module only reads requests and answers them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..protocol import bounds, errors
from ..protocol.errors import ApiError
from . import uploads, v1
from .bodies import json_body, parse_json, validate
from .deps import current_user, get_services, run_hot
from .maintenance import delete_draft_files
from .routes_assets import drop_malformed_range
from .services import Services

router = APIRouter(prefix="/v1/videos", tags=["videos (official API)"])
#: a JSON body's data URL may use the whole JSON body limit (multipart takes larger images)
JSON_LIMITS = bounds.Limits(long_strings=(("input_reference.image_url", 10 * 1024 * 1024),))
FORM_FIELDS = ("prompt", "model", "seconds", "size")
CONTENT = {"video": ("video_file", "video/mp4"), "thumbnail": ("thumbnail_file", "image/webp"),
           "spritesheet": ("spritesheet_file", "image/jpeg")}
#: a content download from a bucket is a redirect to a presigned URL living this long at most (it is
#: followed at once; a new request gets a new one)
CONTENT_LINK_TTL = 3600.0


# -- reading the create request ----------------------------------------------------------------
async def _read_form(request: Request, max_part_size: int):
    """The form (at most one file) and its plain fields; a form that cannot be read is a 400."""
    try:
        form = await request.form(max_files=1, max_fields=32, max_part_size=max_part_size)
    except (ApiError, HTTPException):  # 413 from the body limit, among others: pass it on
        raise
    except Exception:  # starlette's multipart errors carry no stable type across versions
        raise errors.invalid_request("The multipart form could not be read.") from None
    return form, {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}


async def _form(request: Request, services: Services) -> tuple[v1.VideoCreate, v1.Reference]:
    # A data URL may travel as a form field: base64 of an image as large as an upload may be
    # (the body limit still caps the whole request at upload_max_bytes plus a little).
    form, fields = await _read_form(request, services.settings.upload_max_bytes * 4 // 3 + 1024)
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


def _no_characters() -> ApiError:
    return errors.invalid_request(
        "Characters are not supported by this server: none of its open video models can learn a "
        "person or object from a clip and keep its likeness across videos. Use an image reference "
        "(input_reference) to start a video from a picture instead.", None)


# Registered before /{video_id}: "characters" must not be taken for a video id. Characters answer a
# 400 in the envelope (never a 404 an SDK would take for a missing video).
@router.post("/characters")
def create_character(user: dict = Depends(current_user)) -> dict:
    """Not supported yet: a 400."""
    raise _no_characters()


@router.get("/characters/{character_id}")
def get_character(character_id: str, user: dict = Depends(current_user)) -> dict:
    """Not supported yet: a 400."""
    raise _no_characters()


async def _operation_body(request: Request, model: type, services: Services):
    """An edit or extension body: JSON, or the SDKs' multipart form with ``video[id]`` or a
    ``video`` file part. Returns ``(parsed, raw, file part or None)``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    part = None
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form, fields = await _read_form(request, services.settings.upload_max_bytes + 1024)
        found = form.get("video")
        part = found if isinstance(found, UploadFile) else None
        video_ref = fields.pop("video[id]", None)
        fields.pop("video", None)
        if video_ref is not None:
            fields["video"] = {"id": video_ref}
        value = fields
    else:
        value = parse_json(await request.body())
    parsed = validate(model, value)
    return parsed, parsed.model_dump(mode="json", exclude_unset=True), part


def _answer(services: Services, task: dict) -> dict:
    return v1.video(task, services.store.generations_for([task["id"]])[task["id"]])


IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)]
RetryCount = Annotated[int, Header(alias="x-stainless-retry-count", ge=0)]


@router.post("/edits")
async def edit_video(request: Request, user: dict = Depends(current_user),
                     services: Services = Depends(get_services), idempotency_key: IdemKey = None,
                     retry_count: RetryCount = 0) -> dict:
    """A new video: `prompt` applied to `video` (`{"id": "video_..."}` or an uploaded file),
    at the source's size and length."""
    body, raw, part = await _operation_body(request, v1.EditBody, services)
    if part is not None and body.video is not None:
        part.file.close()
        raise errors.invalid_request("video is either a file or {\"id\": \"video_...\"}, not both.", "video")
    if part is None and body.video is None:
        raise errors.invalid_request("video must name a completed video ({\"id\": \"video_...\"}) or be "
                                     "a video file.", "video")
    try:
        return await run_in_threadpool(_edit, services, user, body, raw, part, idempotency_key, retry_count)
    finally:
        if part is not None:
            part.file.close()


def _edit(services: Services, user: dict, body, raw: dict, part, idem_key, retry_count) -> dict:
    if part is None:
        source, gen = v1.completed_source(services, user, body.video.id, "video")
        task = v1.submit_built(services, user, raw, v1.request_key_of(raw),
                               lambda: v1.remix_row(services, user, body.prompt, raw, source=source, gen=gen),
                               idem_key, retry_count)
        return _answer(services, task)
    digest = v1.file_digest(part)
    raw = {**raw, "video_sha256": digest}
    saved: dict = {}

    def build() -> dict:
        try:
            saved.update(uploads.save_video(services, user["id"], part))
        except ApiError as exc:
            exc.param = "video"
            raise
        return v1.remix_row(services, user, body.prompt, raw, source=None, gen=None, upload=saved)

    task = v1.submit_built(services, user, raw, v1.request_key_of(raw), build, idem_key, retry_count,
                           undo=lambda: v1.drop_saved(services, user, saved.get("id")))
    return _answer(services, task)


@router.post("/extensions")
async def extend_video(request: Request, user: dict = Depends(current_user),
                       services: Services = Depends(get_services), idempotency_key: IdemKey = None,
                       retry_count: RetryCount = 0) -> dict:
    """One longer video: the completed `video` (`{"id"}`), then `seconds` more made from its
    last frame with `prompt`."""
    body, raw, part = await _operation_body(request, v1.ExtendBody, services)
    if part is not None:
        part.file.close()
        raise errors.invalid_request("Extensions continue a video made here: send video as "
                                     "{\"id\": \"video_...\"}, not a file.", "video")

    def run() -> dict:
        task = v1.submit_built(services, user, raw, v1.request_key_of(raw),
                               lambda: v1.extension_row(services, user, body, raw), idempotency_key, retry_count)
        return _answer(services, task)

    return await run_in_threadpool(run)


@router.post("/{video_id}/remix")
def remix_video(video_id: str, user: dict = Depends(current_user),
                parsed: tuple[v1.RemixBody, dict] = Depends(json_body(v1.RemixBody)),
                services: Services = Depends(get_services), idempotency_key: IdemKey = None,
                retry_count: RetryCount = 0) -> dict:
    """A new video: `prompt` applied to the completed video, at its size and length; its
    `remixed_from_video_id` names the source."""
    body, raw = parsed
    raw = {**raw, "remix_of": video_id}
    source, gen = v1.completed_source(services, user, video_id, "video_id")
    task = v1.submit_built(services, user, raw, v1.request_key_of(raw),
                           lambda: v1.remix_row(services, user, body.prompt, raw, source=source, gen=gen,
                                                param="video_id"),
                           idempotency_key, retry_count)
    return _answer(services, task)


@router.get("/{video_id}")
async def retrieve_video(video_id: str, user: dict = Depends(current_user),
                         services: Services = Depends(get_services)) -> JSONResponse:
    """One video; `openai-poll-after-ms` says when to look again while it is unfinished."""
    # the SDKs' poll: on the hot routes' small pool, like pending/v2
    return await run_hot(_retrieve, services, user, video_id)


def _retrieve(services: Services, user: dict, video_id: str) -> JSONResponse:
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
        delete_draft_files(services, gen["id"])
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
    path = services.media.local_path(name) if name else None
    if name and path is None:  # in a bucket: the client fetches it from there (the SDKs follow)
        if not services.media.exists(name):
            raise ApiError(404, "not_found", f"This video has no {variant}.", param="variant")
        url = services.media.url(name, min(services.signer.ttl, CONTENT_LINK_TTL))
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    if path is None or not path.is_file():
        raise ApiError(404, "not_found", f"This video has no {variant}.", param="variant")
    drop_malformed_range(request)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
