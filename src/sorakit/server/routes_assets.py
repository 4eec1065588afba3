"""``/assets/{gen_id}/{file}``: signed, expiring capability links (PROTOCOL section 4).

No credentials: the signature is the permission. Refusals answer like Azure blob storage did,
403 with an XML ``AuthenticationFailed`` body, because clients written for Sora parse it.
"""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from .deps import get_services
from .links import _parse_iso
from .services import Services

router = APIRouter(tags=["assets"])
FILES = {"video.mp4": ("video_file", "video/mp4"), "thumbnail.webp": ("thumbnail_file", "image/webp"),
         "spritesheet.jpg": ("spritesheet_file", "image/jpeg")}


def _xml_error(status: int, code: str, message: str) -> Response:
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>")
    return Response(body, status_code=status, media_type="application/xml")


@router.api_route("/assets/{gen_id}/{filename}", methods=["GET", "HEAD"])
def asset(gen_id: str, filename: str, request: Request, services: Services = Depends(get_services)):
    """A video or thumbnail. ``Range`` (206/416), ``HEAD``, ``ETag`` and ``Content-Length`` work."""
    q = request.query_params
    refused = services.signer.verify(request.url.path, q.get("se"), q.get("sp"), q.get("sig"))
    if refused:
        return _xml_error(403, "AuthenticationFailed", "Server failed to authenticate the request. "
                          f"Make sure the value of Authorization header is formed correctly. {refused}")
    column, media_type = FILES.get(filename, (None, None))
    row = services.store.generation(gen_id) if column else None
    key = row[column] if row and row[column] else None
    path = services.media.local_path(key) if key else None
    if key and path is None:
        # media in a bucket: links name the bucket, but one made before the switch still works
        return _redirect(services, key, q.get("se"))
    if path is None or not path.is_file():
        return _xml_error(404, "BlobNotFound", "The specified blob does not exist.")
    drop_malformed_range(request)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


def _redirect(services: Services, key: str, se: str | None) -> Response:
    """To the bucket's presigned URL, for no longer than the signed link had left (an hour at most)."""
    left = (_parse_iso(se or "") or 0) - time.time()
    url = services.media.url(key, max(min(left, 3600.0), 1.0))
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})


_RANGE = re.compile(r"^bytes=(\d+-\d*|-\d+)(,\s*(\d+-\d*|-\d+))*$")


def drop_malformed_range(request: Request) -> None:
    """A malformed or backwards Range is ignored (RFC 9110 allows it; blob storage answers 200)."""
    value = request.headers.get("range")
    if value is None:
        return
    parts = value[6:].split(",") if _RANGE.match(value.strip()) else []
    backwards = any(a and b and int(a) > int(b) for a, _, b in (p.strip().partition("-") for p in parts))
    if not parts or backwards:
        request.scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"range"]
