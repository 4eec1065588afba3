"""POST /backend/uploads and image-to-video through the preview engine (its first frame)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import assert_error
from PIL import Image

from sorakit.media.encode import decode_frames


def _image_bytes(fmt: str, colour=(200, 40, 40), size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _upload(api, data: bytes, name="frame.png", headers=None):
    return api.client.post("/backend/uploads", files={"file": (name, data, "application/octet-stream")},
                           data={"file_name": name}, headers=headers or api.alice)


@pytest.mark.parametrize("fmt,mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_images_are_accepted_by_content(api, fmt, mime):
    r = _upload(api, _image_bytes(fmt), name="no-extension")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("media_") and body["mime_type"] == mime
    assert (body["width"], body["height"]) == (64, 48)


def test_non_images_and_other_formats_are_400(api):
    assert_error(_upload(api, b"GIF89a not really", name="x.png"), 400, "invalid_request", "file")
    assert_error(_upload(api, _image_bytes("GIF"), name="x.gif"), 400, "invalid_request", "file")
    assert_error(_upload(api, _image_bytes("PNG")[:40], name="cut.png"), 400, "invalid_request", "file")


def test_size_limit_is_413(api, monkeypatch):
    from sorakit.server import routes_uploads
    monkeypatch.setattr(routes_uploads, "MAX_BYTES", 1000)
    assert_error(_upload(api, b"\0" * 1001), 413, "file_too_large", "file")


def test_missing_file_part_is_400(api):
    r = api.client.post("/backend/uploads", data={"file_name": "x"}, headers=api.alice)
    assert_error(r, 400, "invalid_request", "file")


def test_preview_starts_from_the_uploaded_image(api, tmp_path):
    upload_id = _upload(api, _image_bytes("PNG", colour=(30, 200, 60))).json()["id"]
    r = api.create(n_frames=6, inpaint_items=[{"kind": "upload", "upload_id": upload_id}])
    assert r.status_code == 200, r.text
    task = api.wait(r.json()["id"])
    assert task["status"] == "succeeded" and task["inpaint_items"][0]["upload_id"] == upload_id
    path = tmp_path / "v.mp4"
    path.write_bytes(api.client.get(task["generations"][0]["url"]).content)
    first, second = list(decode_frames(path))[:2]
    assert np.abs(first.reshape(-1, 3).mean(axis=0) - (30, 200, 60)).max() < 12
    assert np.abs(second.astype(int) - first).mean() > 5  # then the animation takes over


def test_uploads_are_private_and_must_exist(api):
    upload_id = _upload(api, _image_bytes("PNG")).json()["id"]
    r = api.create(headers=api.bob, inpaint_items=[{"kind": "upload", "upload_id": upload_id}])
    assert_error(r, 400, "invalid_request", "inpaint_items")
    r = api.create(inpaint_items=[{"kind": "reference", "reference_id": "ref_1"}])
    assert_error(r, 400, "invalid_request", "inpaint_items")
