"""The official Videos API's door (PROTOCOL section 7): its request shapes in, its video object out.

A thin adapter over the same task service as ``/backend``: a ``/v1`` video *is* a task (its id
is the task's body under the ``video_`` prefix), made by the same engines under the same quota,
and listed among the user's drafts. What this module adds is the official contract: exact sizes
and durations (an engine that cannot make them refuses with a 400 naming the field), the video
object with every documented key, and a ``progress`` that never goes backwards.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass
from typing import Any

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..engines import PlanRefused
from ..ids import task_id, video_id
from ..protocol import errors
from ..protocol.errors import ApiError
from ..protocol.models import NAME, TEXT
from . import create, uploads
from .services import Services

SECONDS = ("4", "8", "12", "16", "20")
SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
PRO_SIZES = ("1920x1080", "1080x1920")
DEFAULTS = {"model": "sora-2", "seconds": "4", "size": "720x1280"}
STATUS = {"preprocessing": "queued", "queued": "queued", "running": "in_progress",
          "processing": "in_progress", "succeeded": "completed", "failed": "failed", "cancelled": "failed"}
#: how soon ``create_and_poll`` should look again (``openai-poll-after-ms``)
POLL_AFTER_MS = {"queued": 2000, "in_progress": 1000}
#: an SDK retry comes within its timeout (10 min by default) and backoff of the first attempt
AUTO_KEY_WINDOW = 15 * 60.0
ERROR_CODES = {"sora_content_violation": "moderation_blocked", "sora_error": "generation_failed"}


class ImageReference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_url: str | None = Field(None, max_length=30_000_000)
    file_id: str | None = Field(None, max_length=NAME)


class VideoCreate(BaseModel):
    """``POST /v1/videos``, as JSON or as the SDKs' multipart form (file aside)."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1, max_length=TEXT)
    model: str | None = Field(None, max_length=NAME)
    seconds: str | None = Field(None, max_length=NAME)
    size: str | None = Field(None, max_length=NAME)
    input_reference: ImageReference | None = None

    @field_validator("seconds", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        # older callers sent the duration as a JSON number
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


@dataclass
class Reference:
    """An ``input_reference``: a file part, a data URL, or an upload id (``file_id``)."""

    part: UploadFile | None = None
    data_url: str | None = None
    file_id: str | None = None
    #: the upload this request made of it: discarded again if the create is refused
    saved: str | None = None

    @property
    def given(self) -> bool:
        return bool(self.part or self.data_url or self.file_id)


# -- create ---------------------------------------------------------------------------------
def _size(req: VideoCreate, model: str) -> tuple[int, int]:
    size = req.size or DEFAULTS["size"]
    allowed = SIZES + (PRO_SIZES if "-pro" in model else ())
    if size not in allowed:
        pro = " (1920x1080 and 1080x1920 with sora-2-pro)" if "-pro" not in model else ""
        raise errors.invalid_request(f"size must be one of {', '.join(allowed)}{pro}; got "
                                     f"{create.show(size)}.", "size")
    width, height = size.split("x")
    return int(width), int(height)


def _seconds(req: VideoCreate) -> int:
    seconds = req.seconds or DEFAULTS["seconds"]
    if seconds not in SECONDS:
        raise errors.invalid_request(f"seconds must be one of {', '.join(SECONDS)}; got "
                                     f"{create.show(seconds)}.", "seconds")
    return int(seconds)


def _orientation(width: int, height: int) -> str:
    return "portrait" if height > width else "landscape" if width > height else "square"


def _data_url_part(url: str) -> UploadFile:
    head, _, payload = url.partition(",")
    if not head.startswith("data:") or ";base64" not in head:
        raise errors.invalid_request("input_reference.image_url must be a base64 data URL "
                                     "(data:image/png;base64,...); this server does not fetch images "
                                     "from the network: send the file instead.", "input_reference")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise errors.invalid_request("input_reference.image_url is not valid base64.", "input_reference") from None
    return UploadFile(io.BytesIO(data), filename="input_reference")


def _reference_upload(services: Services, user: dict, ref: Reference) -> dict:
    """The reference image as an upload row (kept like any upload: quota, retention)."""
    if ref.file_id:
        row = services.store.upload(ref.file_id, user["id"])
        if row is not None and not row["mime"].startswith("image/"):
            raise errors.invalid_request("input_reference.file_id names an uploaded video; a reference is "
                                         "an image.", "input_reference")
        if row is None:
            raise errors.invalid_request("input_reference.file_id names no upload of yours "
                                         "(POST /backend/uploads gives media_... ids).", "input_reference")
        return row
    part = ref.part or _data_url_part(ref.data_url or "")
    try:
        row = uploads.save(services, user["id"], part, part.filename)
    except ApiError as exc:
        exc.param = "input_reference"
        raise
    ref.saved = row["id"]
    return row


def _check_aspect(upload: dict, width: int, height: int) -> None:
    if abs(upload["width"] * height - upload["height"] * width) > 0.01 * width * height:
        raise errors.invalid_request(
            f"input_reference is {upload['width']}x{upload['height']}, whose shape does not match size "
            f"{width}x{height}; send an image of that aspect ratio.", "input_reference")


def _plan(engine, model: str, width: int, height: int, seconds: int, image: bool):
    try:
        return engine.plan_exact(width, height, seconds, image=image)
    except PlanRefused as exc:
        raise errors.invalid_request(f"{exc.message} (model {create.show(model)} runs on engine "
                                     f"{engine.name!r})", exc.param) from None


def build_row(services: Services, user: dict, req: VideoCreate, ref: Reference) -> dict:
    model = req.model or DEFAULTS["model"]
    prompt = create.check_prompt(req.prompt, services.settings.max_prompt_chars)
    width, height = _size(req, model)
    seconds = _seconds(req)
    engine_name, engine = create.engine_for(services, model)
    if ref.given and not engine.supports_image:
        raise errors.invalid_request(f"Model {create.show(model)} has no image-to-video pipeline here.",
                                     "input_reference")
    plan = _plan(engine, model, width, height, seconds, ref.given)
    items = []
    if ref.given:
        upload = _reference_upload(services, user, ref)
        _check_aspect(upload, width, height)
        items = [{"kind": "upload", "upload_id": upload["id"]}]
    request = {**req.model_dump(mode="json", exclude_unset=True, exclude={"input_reference"}),
               "api": "v1", "seconds": str(seconds)}
    return create.task_row(services, user["id"], prompt=prompt, model=model, engine=engine_name, plan=plan,
                           orientation=_orientation(width, height), size=f"{width}x{height}", items=items,
                           request=request)


def request_key(req: VideoCreate, ref_digest: str | None) -> tuple[dict, str]:
    """The request as hashed for idempotency, and the implicit key of an SDK create.

    The openai SDKs send no Idempotency-Key but retry creates themselves (408, 409, 429, 5xx,
    lost connections), saying so in ``x-stainless-retry-count``. A first attempt records an
    implicit key derived from its body; a retry with the same body replays the task it made.
    """
    raw = {**req.model_dump(mode="json", exclude_unset=True), "input_reference_sha256": ref_digest}
    digest = create.body_hash(raw)
    return raw, f"sdk-auto:{digest}"


def submit(services: Services, user: dict, req: VideoCreate, ref: Reference, idem_key: str | None,
           sdk_retry: int) -> dict:
    raw, auto_key = request_key(req, _digest(ref))
    return submit_built(services, user, raw, auto_key, lambda: build_row(services, user, req, ref), idem_key,
                        sdk_retry, undo=lambda: drop_saved(services, user, ref.saved))


def submit_built(services: Services, user: dict, raw: dict, auto_key: str, build, idem_key: str | None,
                 sdk_retry: int, undo=None) -> dict:
    """Insert the task ``build()`` makes under the idempotency rules of every /v1 create.

    An SDK retry (``x-stainless-retry-count`` > 0, no Idempotency-Key) replays the task its first
    attempt made with the same body; a first attempt re-points the implicit key at its own task.
    ``undo`` removes what a refused build left behind (an upload it saved).
    """
    implicit = idem_key is None
    key, fresh = (auto_key, sdk_retry == 0) if implicit else (idem_key, False)
    if not fresh:
        found = _replayable(services, user, key, raw, AUTO_KEY_WINDOW if implicit else None)
        if found is not None:
            return found
    try:
        return create.insert(services, user, build(), raw, key, fresh_key=fresh)
    except ApiError:  # refused: nothing was inserted
        if undo is not None:
            undo()
        if fresh:  # it would otherwise still name an older task with the same body
            services.store.forget_key(user["id"], key)
        raise


def drop_saved(services: Services, user: dict, upload_id: str | None) -> None:
    """A refused create's own upload goes again (unless a task needs it after all)."""
    if upload_id:
        try:
            uploads.delete(services, user["id"], upload_id)
        except ApiError:  # already gone, or (a replay's) task needs it: keep it
            pass


def _replayable(services: Services, user: dict, key: str, raw: dict, window: float | None) -> dict | None:
    """The task a key already made (before anything is uploaded or planned again)."""
    from ..store import IdempotencyConflict

    try:
        if window is None:
            return services.store.replay(user["id"], key, create.body_hash(raw))
        return services.store.replay(user["id"], key, create.body_hash(raw), window)
    except IdempotencyConflict:
        raise errors.idempotency_conflict() from None


def file_digest(part: UploadFile) -> str:
    part.file.seek(0)
    sha = hashlib.sha256()
    while chunk := part.file.read(1024 * 1024):
        sha.update(chunk)
    part.file.seek(0)
    return sha.hexdigest()


def request_key_of(raw: dict) -> str:
    """The implicit idempotency key of an SDK request with this body (see ``request_key``)."""
    return f"sdk-auto:{create.body_hash(raw)}"


def _digest(ref: Reference) -> str | None:
    if ref.part is not None:
        return file_digest(ref.part)
    value = ref.data_url or ref.file_id
    return hashlib.sha256(value.encode()).hexdigest() if value else None


# -- the video object ------------------------------------------------------------------------
def seconds_of(row: dict) -> str:
    seconds = row["n_frames"] / max(row["fps"], 1)
    return str(round(seconds)) if abs(seconds - round(seconds)) < 0.01 else f"{seconds:.2f}"


def progress_of(row: dict, status: str) -> int:
    if status == "completed":
        return 100
    # A task handed back to the queue keeps the mark it reached (never backwards); in progress
    # tops out at 99, since 100 means done.
    return min(int((row["progress"] or 0.0) * 100), 99)


def error_of(row: dict, gens: list[dict]) -> dict | None:
    if row["status"] == "cancelled":
        return {"code": "cancelled", "message": "The video was cancelled before it finished."}
    if row["status"] != "failed":
        return None
    kind = gens[0]["kind"] if gens else "sora_error"
    return {"code": ERROR_CODES.get(kind, "generation_failed"),
            "message": row["failure_reason"] or "The video could not be generated."}


def video(row: dict, gens: list[dict]) -> dict[str, Any]:
    status = STATUS[row["status"]]
    finished = row["finished_at"] if status in ("completed", "failed") else None
    request = row.get("request") or {}
    return {
        "id": video_id(row["id"]), "object": "video", "model": row["model"], "status": status,
        "progress": progress_of(row, status), "created_at": int(row["created_at"]),
        "completed_at": int(finished) if finished else None, "expires_at": None,
        "prompt": row["prompt"], "seconds": seconds_of(row), "size": f"{row['width']}x{row['height']}",
        "remixed_from_video_id": remixed_from(row), "error": error_of(row, gens),
    }


def remixed_from(row: dict) -> str | None:
    """The video a remix (or an edit) was made from, whichever door made it."""
    inputs = row.get("inputs") or {}
    if row.get("operation") == "remix" and inputs.get("source_task_id"):
        return video_id(inputs["source_task_id"])
    return (row.get("request") or {}).get("remixed_from_video_id")


def poll_after_ms(status: str) -> str | None:
    value = POLL_AFTER_MS.get(status)
    return str(value) if value else None


def own_task(services: Services, user: dict, vid: str) -> dict:
    row = services.store.task(task_id(vid), user["id"]) if vid.startswith("video_") else None
    if row is None:
        raise ApiError(404, "not_found", f"No video found with id {create.show(vid)}.", param="video_id")
    return row


# -- remix, edits, extensions ------------------------------------------------------------------
class VideoId(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=NAME)


class RemixBody(BaseModel):
    """``POST /v1/videos/{id}/remix``."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1, max_length=TEXT)


class EditBody(RemixBody):
    """``POST /v1/videos/edits``: ``video`` is ``{"id"}`` here; a file travels as a form part."""

    video: VideoId | None = None


class ExtendBody(EditBody):
    """``POST /v1/videos/extensions``: ``seconds`` is the length of the added segment."""

    seconds: str = Field(max_length=NAME)

    @field_validator("seconds", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def completed_source(services: Services, user: dict, vid: str, param: str) -> tuple[dict, dict]:
    """A finished video of the caller's and its draft (what a remix or an extension reads)."""
    row = services.store.task(task_id(vid), user["id"]) if vid.startswith("video_") else None
    if row is None:
        raise ApiError(404, "not_found", f"No video found with id {create.show(vid)}.", param=param)
    drafts = [g for g in services.store.generations_for([row["id"]])[row["id"]] if g["kind"] == "sora_draft"]
    if row["status"] != "succeeded" or not drafts:
        raise errors.invalid_request(f"Video {create.show(vid)} is not completed (status {STATUS[row['status']]}); "
                                     "only completed videos can be remixed, edited or extended.", param)
    return row, drafts[0]


def remix_row(services: Services, user: dict, prompt: str, raw: dict, *, source: dict | None, gen: dict | None,
              upload: dict | None = None, param: str = "video") -> dict:
    """Video to video with a new prompt, at the source's own size and length: the official
    remix (a video id) and edits (a video id, or an uploaded video file)."""
    from .operations import check_operation

    text = create.check_prompt(prompt, services.settings.max_prompt_chars)
    if source is not None:
        model, width, height, seconds = source["model"], source["width"], source["height"], float(seconds_of(source))
    else:  # an uploaded file: the official sizes in its orientation, at most the longest duration
        model = DEFAULTS["model"]
        width, height = (1280, 720) if upload["width"] > upload["height"] else (720, 1280)
        seconds = max(min(round(upload["n_frames"] / upload["fps"]), int(SECONDS[-1])), 1)
    engine_name, engine = create.engine_for(services, model)
    check_operation(engine_name, engine, model, "remix", param)
    plan = _plan(engine, model, width, height, seconds, False)
    request = {**raw, "api": "v1", "seconds": f"{seconds:g}"}
    items = [{"kind": "video_upload", "upload_id": upload["id"]}] if upload else []
    row = create.task_row(services, user["id"], prompt=text, model=model, engine=engine_name, plan=plan,
                          orientation=_orientation(width, height), size=f"{width}x{height}", items=items,
                          request=request)
    row.update(operation="remix", n_variants=1, inputs={
        "source_generation_id": gen["id"] if gen else None, "source_task_id": source["id"] if source else None,
        "source_upload_id": upload["id"] if upload else None, "source_post_id": None, "strength": None})
    return row


def extension_row(services: Services, user: dict, body: ExtendBody, raw: dict) -> dict:
    from .operations import extension_row as backend_extension

    if body.video is None:
        raise errors.invalid_request("video must name the completed video to extend: {\"id\": \"video_...\"}.",
                                     "video")
    _, gen = completed_source(services, user, body.video.id, "video")
    try:
        seconds = float(body.seconds)
    except ValueError:
        raise errors.invalid_request(f"seconds must be a number; got {create.show(body.seconds)}.", "seconds") from None
    row = backend_extension(services, user, gen["id"], body.prompt, seconds, {**raw, "api": "v1"},
                            param_seconds="seconds", param_source="video")
    return row
