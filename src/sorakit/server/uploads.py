"""Uploaded images (PROTOCOL section 2, inpaint_items): receive, check, keep, list, delete, expire.

Nothing here can be made to use much memory or disk: the body is copied to disk in chunks and
counted, the image's format and dimensions are read from its header before any pixel is decoded,
at most ``DECODE_SLOTS`` images decode at once, and each user's kept uploads share a quota.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from pathlib import Path

from fastapi import UploadFile
from PIL import Image, UnidentifiedImageError

from ..config import Settings
from ..ids import new_id
from ..media.storage import UPLOADS, StorageError, upload_key
from ..private import private_dir
from ..protocol import errors
from ..protocol.errors import ApiError
from .services import Services

log = logging.getLogger("sorakit.server")
FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}
#: a 40 MP photo at most; decoding takes about 4 bytes a pixel (160 MB)
MAX_PIXELS = 40_000_000
MAX_SIDE = 8192
CHUNK = 1024 * 1024
#: decodes at once in this process: bounds their memory to DECODE_SLOTS * MAX_PIXELS * 4 bytes
DECODE_SLOTS = 2
_decoding = threading.BoundedSemaphore(DECODE_SLOTS)
#: temp files and unlisted files younger than this may belong to an upload in progress
STRAY_AGE = 3600.0
_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)
MB = 1024 * 1024


def folder(services: Services) -> Path:
    """Where an upload is received and checked before it is kept, readable by the server's user
    only (0700, even if made earlier): the uploads folder itself for local media (``<data_dir>/uploads``
    unless ``media`` names a folder), so keeping it is a rename; a local staging folder when the
    media are in a bucket."""
    return private_dir(services.media.upload_staging)


# -- receiving ------------------------------------------------------------------------------
def _too_large(limit: int) -> ApiError:
    return ApiError(413, "file_too_large", f"The file is larger than {limit / MB:g} MB.", param="file")


def _receive(part: UploadFile, tmp: Path, limit: int) -> int:
    """Copy the part to ``tmp`` (mode 0600) in chunks; never reads more than ``limit + 1`` bytes."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    size = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := part.file.read(min(CHUNK, limit + 1 - size)):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            out.write(chunk)
    return size


def _check_header(image: Image.Image) -> None:
    if image.format not in FORMATS:
        raise errors.invalid_request(f"Images must be PNG, JPEG or WebP; this one is {image.format}.", "file")
    width, height = image.size
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise errors.invalid_request(
            f"The image is {width}x{height} pixels; the limit is {MAX_SIDE} pixels a side and "
            f"{MAX_PIXELS / 1e6:g} million pixels in all.", "file")


def _inspect(path: Path) -> tuple[str, int, int]:
    """The image's format and size, refused from its header before any pixel is decoded."""
    try:
        with Image.open(path) as image:  # reads the header only
            _check_header(image)
            fmt, (width, height) = image.format, image.size
            if fmt == "JPEG":
                image.draft(image.mode, (1, 1))  # decode at 1/8 scale: every byte is still checked
            with _decoding:
                image.load()
            return fmt, width, height
    except Image.DecompressionBombError:  # raised by open itself, for gigapixel headers
        raise errors.invalid_request(f"The image has far more than {MAX_PIXELS / 1e6:g} million pixels, "
                                     "the limit.", "file") from None
    except _UNREADABLE:
        raise errors.invalid_request("The file is not a readable PNG, JPEG or WebP image.", "file") from None


# -- answers ---------------------------------------------------------------------------------
def describe(row: dict, settings: Settings) -> dict:
    return {"id": row["id"], "width": row["width"], "height": row["height"], "mime_type": row["mime"],
            "bytes": row["bytes"], "created_at": row["created_at"],
            "expires_at": row["created_at"] + settings.upload_retention_seconds,
            "file_name": row["file_name"]}


def _quota_exceeded(used: int, size: int, quota: int) -> ApiError:
    # 413, not 429: waiting does not help (429 invites a retry after Retry-After); this request's
    # content is what the server will not take until the user frees space.
    return ApiError(413, "upload_quota_exceeded",
                    f"This {size / MB:.1f} MB upload would exceed your upload storage: {used / MB:.1f} MB "
                    f"of {quota / MB:.0f} MB used. Delete uploads you no longer need "
                    "(DELETE /backend/uploads/{id}) to free space.", param="file")


# -- operations ------------------------------------------------------------------------------
def save(services: Services, user_id: str, part: UploadFile, file_name: str | None) -> dict:
    """Receive, check and keep one image for ``user_id``; returns its row."""
    settings, store = services.settings, services.store
    upload_id = new_id("media")
    where = folder(services)
    tmp = where / f".{upload_id}.tmp"
    try:
        size = _receive(part, tmp, settings.upload_max_bytes)
        used = store.upload_bytes(user_id)
        if used + size > settings.upload_quota_bytes:  # early and cheap: before decoding
            raise _quota_exceeded(used, size, settings.upload_quota_bytes)
        fmt, width, height = _inspect(tmp)
        mime, ext = FORMATS[fmt]
        row = {"id": upload_id, "user_id": user_id, "created_at": store.clock(),
               "file_name": (file_name or part.filename or "")[:300], "file": f"{upload_id}.{ext}",
               "mime": mime, "width": width, "height": height, "bytes": size}
        return _keep(services, tmp, row)
    finally:
        tmp.unlink(missing_ok=True)


#: an uploaded source video (the official API's edits): at most this long and this large a side
MAX_VIDEO_SECONDS = 60.0
MAX_VIDEO_SIDE = 4096


def _inspect_video(path: Path) -> tuple[int, int, int, float]:
    """Width, height, frame count and frame rate of an uploaded video, from its container and
    packets (nothing is decoded here; the worker decodes it like any source)."""
    import av

    bad = errors.invalid_request("The file is not a readable video (MP4, MOV or WebM with a video track).",
                                 "video")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise bad
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            if not width or not height:  # a still image read as a one-frame stream
                raise bad
            if not (0 < width <= MAX_VIDEO_SIDE and 0 < height <= MAX_VIDEO_SIDE) or not 0 < fps <= 240:
                raise errors.invalid_request(f"The video is {width}x{height} at {fps:g} fps; the limit is "
                                             f"{MAX_VIDEO_SIDE} pixels a side and 240 fps.", "video")
            frames = 0
            for packet in container.demux(stream):
                frames += packet.size > 0
                if frames > MAX_VIDEO_SECONDS * fps:
                    raise errors.invalid_request(f"The video is longer than {MAX_VIDEO_SECONDS:g} seconds.",
                                                 "video")
    except ApiError:
        raise
    except Exception:  # PyAV raises many kinds for broken files
        raise bad from None
    if frames == 0:
        raise bad
    return width, height, frames, fps


def save_video(services: Services, user_id: str, part: UploadFile) -> dict:
    """Receive, check and keep one source video (counted in the uploads quota); returns its row
    with ``n_frames`` and ``fps`` added (not stored: the worker reads the file itself)."""
    settings, store = services.settings, services.store
    upload_id = new_id("media")
    tmp = folder(services) / f".{upload_id}.tmp"
    try:
        size = _receive(part, tmp, settings.upload_max_bytes)
        used = store.upload_bytes(user_id)
        if used + size > settings.upload_quota_bytes:
            raise _quota_exceeded(used, size, settings.upload_quota_bytes)
        width, height, n_frames, fps = _inspect_video(tmp)
        row = {"id": upload_id, "user_id": user_id, "created_at": store.clock(),
               "file_name": (part.filename or "")[:300], "file": f"{upload_id}.video", "mime": "video/mp4",
               "width": width, "height": height, "bytes": size}
        return {**_keep(services, tmp, row), "n_frames": n_frames, "fps": fps}
    finally:
        tmp.unlink(missing_ok=True)


def _keep(services: Services, tmp: Path, row: dict) -> dict:
    """Move the file into place (a rename, or an upload to the bucket), then record it if the
    quota still allows (the binding check).

    File first: a crash between the two leaves an unlisted file (pruned later), never a listed
    upload without its file.
    """
    services.media.put(upload_key(row["file"]), tmp, content_type=row["mime"])
    quota = services.settings.upload_quota_bytes
    try:
        added, used = services.store.add_upload(row, quota)
    except BaseException:
        _remove(services, row["file"])
        raise
    if not added:
        _remove(services, row["file"])
        raise _quota_exceeded(used, row["bytes"], quota)
    return row


def listing(services: Services, user_id: str) -> dict:
    rows = services.store.uploads_of(user_id)
    return {"items": [describe(r, services.settings) for r in rows],
            "used_bytes": sum(r["bytes"] for r in rows), "quota_bytes": services.settings.upload_quota_bytes}


def delete(services: Services, user_id: str, upload_id: str) -> dict:
    """Delete the caller's upload, refused with 409 while an unfinished task still needs it.

    Refusing (rather than letting the task fail when it runs) keeps a queued video from failing
    long after the click that caused it; the client can cancel the task and delete again.
    """
    row, needed_by = services.store.delete_upload(upload_id, user_id)
    if row is None:
        raise errors.not_found("upload")
    if needed_by:
        raise ApiError(409, "upload_in_use", f"The upload is used by unfinished task {needed_by[0]}; "
                       "cancel it or wait until it finishes, then delete the upload.", param="upload_id")
    _remove(services, row["file"])
    return {"id": row["id"], "deleted": True}


def _remove(services: Services, name: str) -> None:
    """An upload's file; a storage failure is logged (the stray sweep removes it later)."""
    try:
        services.media.delete(upload_key(name))
    except StorageError as exc:
        log.warning("upload file %s not removed yet: %s", name, exc)


def prune_uploads(services: Services, now: float | None = None) -> int:
    """Delete uploads older than the retention that no unfinished task names; returns how many.

    Also removes files no upload lists (temp files of interrupted uploads, files whose row a crash
    deleted) once they are an hour old, so nothing left on disk escapes the quota for long.
    """
    settings = services.settings
    now = services.store.clock() if now is None else now
    gone = services.store.delete_uploads_before(now - settings.upload_retention_seconds)
    for row in gone:
        _remove(services, row["file"])
    strays = _sweep_strays(services)
    if gone or strays:
        log.info("pruned %d expired uploads and %d stray upload files", len(gone), strays)
    return len(gone)


def _sweep_strays(services: Services) -> int:
    media = services.media
    cutoff = time.time() - STRAY_AGE  # file times are wall-clock, whatever the store's clock says
    removed = 0
    if media.kind != "local":
        # the staging folder: temp files of uploads interrupted on this machine
        removed += _sweep_folder(media.upload_staging, cutoff)
        # a bucket is listed at most every STRAY_LISTING seconds (a request per thousand objects)
        if time.monotonic() - _listed.get(media, -math.inf) < STRAY_LISTING:
            return removed
        _listed[media] = time.monotonic()
    listed = services.store.upload_files()
    try:
        for entry in media.entries(UPLOADS):
            name = entry.key[len(UPLOADS) + 1:]
            if "/" not in name and name not in listed and entry.mtime < cutoff:
                media.delete(entry.key)
                removed += 1
    except StorageError as exc:
        log.warning("stray uploads could not be swept: %s", exc)
    return removed


#: when each bucket's uploads were last listed, by storage
_listed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
STRAY_LISTING = 600.0


def _sweep_folder(where: Path, cutoff: float) -> int:
    if not where.is_dir():
        return 0
    removed = 0
    for path in where.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another process got there first
            continue
    return removed
