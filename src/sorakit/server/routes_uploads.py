"""``/backend/uploads``: images to start a video from (PROTOCOL section 2, inpaint_items).

The work (limits, quota, files on disk, expiry) lives in ``uploads.py``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, UploadFile

from . import uploads
from .deps import current_user, get_services
from .services import Services

router = APIRouter(prefix="/backend", tags=["uploads"])


@router.post("/uploads")
def upload(file: UploadFile = File(...), file_name: str | None = Form(None),
           user: dict = Depends(current_user), services: Services = Depends(get_services)) -> dict:
    """Keep an image for ``inpaint_items: [{"kind": "upload", "upload_id": ...}]``."""
    row = uploads.save(services, user["id"], file, file_name)
    return uploads.describe(row, services.settings)


@router.get("/uploads")
def list_uploads(user: dict = Depends(current_user), services: Services = Depends(get_services)) -> dict:
    """The caller's uploads, newest first, with the storage they use and their quota."""
    return uploads.listing(services, user["id"])


@router.delete("/uploads/{upload_id}")
def delete_upload(upload_id: str, user: dict = Depends(current_user),
                  services: Services = Depends(get_services)) -> dict:
    return uploads.delete(services, user["id"], upload_id)
