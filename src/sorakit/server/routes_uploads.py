"""``POST /backend/uploads``: an image to start a video from (PROTOCOL section 2, inpaint_items).

The file is checked by decoding it, not by its name: only PNG, JPEG and WebP images are kept.
"""

from __future__ import annotations

import io
import os
import warnings

from fastapi import APIRouter, Depends, File, Form, UploadFile
from PIL import Image, UnidentifiedImageError

from ..ids import new_id
from ..protocol import errors
from ..protocol.errors import ApiError
from .deps import current_user, get_services
from .services import Services

router = APIRouter(prefix="/backend", tags=["uploads"])
FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000


def _read_limited(upload: UploadFile) -> bytes:
    data = upload.file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ApiError(413, "file_too_large", f"The file is larger than {MAX_BYTES // (1024 * 1024)} MB.",
                       param="file")
    return data


def _decode(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError):
        raise errors.invalid_request("The file is not a readable PNG, JPEG or WebP image.", "file") from None
    if image.format not in FORMATS:
        raise errors.invalid_request(f"Images must be PNG, JPEG or WebP; this one is {image.format}.", "file")
    if image.width * image.height > MAX_PIXELS:
        raise errors.invalid_request("The image has too many pixels.", "file")
    return image


@router.post("/uploads")
def upload(file: UploadFile = File(...), file_name: str | None = Form(None),
           user: dict = Depends(current_user), services: Services = Depends(get_services)) -> dict:
    """Keep an image for ``inpaint_items: [{"kind": "upload", "upload_id": ...}]``."""
    data = _read_limited(file)
    image = _decode(data)
    mime, ext = FORMATS[image.format]
    upload_id = new_id("media")
    folder = services.settings.data_dir / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{upload_id}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / f"{upload_id}.{ext}")
    services.store.add_upload({
        "id": upload_id, "user_id": user["id"], "created_at": services.store.clock(),
        "file_name": (file_name or file.filename or "")[:300], "file": f"{upload_id}.{ext}", "mime": mime,
        "width": image.width, "height": image.height, "bytes": len(data)})
    return {"id": upload_id, "width": image.width, "height": image.height, "mime_type": mime}
