"""POST /backend/uploads and image-to-video through the preview engine (its first frame)."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from conftest import assert_error
from PIL import Image

from sorakit.media.encode import decode_frames
from sorakit.server.uploads import prune_uploads


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


def test_size_limit_is_413(make_api):
    api = make_api(upload_max_bytes=1024)
    assert_error(_upload(api, b"\0" * 1025), 413, "file_too_large", "file")
    assert_error(_upload(api, b"\0" * 1024), 400, "invalid_request", "file")  # the limit itself passes
    assert os.listdir(api.settings.data_dir / "uploads") == []  # nothing left behind


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


# -- limits checked from the header, before decoding -----------------------------------------
def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _flat_png(width: int, height: int, rgb=(200, 40, 40)) -> bytes:
    """A single-colour RGB PNG, written row by row: Pillow would need width*height*4 bytes to make it."""
    row, z = b"\0" + bytes(rgb) * width, zlib.compressobj(9)
    return _png(width, height, b"".join([z.compress(row) for _ in range(height)]) + z.flush())


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("png") / "9400.png"
    path.write_bytes(_flat_png(9400, 9400))  # ~280 KB; decoded it would be ~350 MB
    return path


# Runs a fresh server process (in-process app, no workers) and reports its peak RSS around one
# upload of argv[2]. Pillow allocates pixels outside Python's allocator, so tracemalloc cannot see
# a decode; the process's peak RSS can.
PEAK_PROBE = r"""
import json, resource, sys
from pathlib import Path
from fastapi.testclient import TestClient
from sorakit.config import load_settings
from sorakit.server import auth
from sorakit.server.app import create_app
from sorakit.server.services import build_services

settings = load_settings({"data_dir": sys.argv[1], "workers": 0})
services = build_services(settings)
user = services.store.create_user("alice")
token, _ = auth.issue(services.store, services.jwt_key, user["id"], 3600)
headers = {"Authorization": "Bearer " + token}
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
data, warm = Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]).read_bytes()
with TestClient(create_app(settings, services=services)) as client:
    post = lambda body: client.post("/backend/uploads", files={"file": ("x.png", body)}, headers=headers)
    assert post(warm).status_code == 200  # imports and first-request costs happen before measuring
    before = peak()
    r = post(data)
    print(json.dumps({"status": r.status_code, "body": r.json(), "grew": peak() - before}))
"""
PEAK_BOUND = 50 * 1024 * 1024  # decoding the 9400x9400 image would add ~350 MB


def test_oversized_image_is_refused_from_its_header(huge_png, tmp_path):
    warm = tmp_path / "warm.png"
    warm.write_bytes(_image_bytes("PNG"))
    out = subprocess.run([sys.executable, "-c", PEAK_PROBE, str(tmp_path / "data"), str(huge_png), str(warm)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 400 and result["body"]["error"]["code"] == "invalid_request", result
    assert result["body"]["error"]["param"] == "file"
    assert "9400x9400" in result["body"]["error"]["message"] and "8192" in result["body"]["error"]["message"]
    assert result["grew"] < PEAK_BOUND, f"peak RSS grew by {result['grew'] / 2**20:.0f} MB"


@pytest.mark.parametrize("size", [(8193, 1), (7000, 7000)])
def test_too_wide_or_too_many_pixels_is_400(api, size):
    error = assert_error(_upload(api, _flat_png(*size)), 400, "invalid_request", "file")
    assert f"{size[0]}x{size[1]}" in error["message"] and "40 million" in error["message"]


def test_gigapixel_header_is_400(api):
    # Pillow itself refuses headers past twice its bomb limit, while opening: still a 400
    error = assert_error(_upload(api, _png(20000, 20000, b"")), 400, "invalid_request", "file")
    assert "40 million" in error["message"]


# -- quota, list, delete ------------------------------------------------------------------------
def _noise_png(seed: int) -> bytes:
    """A PNG that does not compress: its size on disk is predictable (~9.3 KB)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _quota_api(make_api, **settings):
    size = len(_noise_png(0))
    return make_api(upload_max_bytes=size + 200, upload_quota_bytes=2 * size + 400, **settings)


def test_quota_is_413_and_frees_after_delete(make_api):
    api = _quota_api(make_api)
    first, _ = (_upload(api, _noise_png(i)).json()["id"] for i in (0, 1))
    error = assert_error(_upload(api, _noise_png(2)), 413, "upload_quota_exceeded", "file")
    assert "MB used" in error["message"] and "Delete uploads" in error["message"]
    assert _upload(api, _noise_png(2), headers=api.bob).status_code == 200  # quotas are per user
    r = api.client.delete(f"/backend/uploads/{first}", headers=api.alice)
    assert r.status_code == 200 and r.json() == {"id": first, "deleted": True}
    assert _upload(api, _noise_png(2)).status_code == 200


def test_quota_holds_when_the_early_check_is_passed(make_api, monkeypatch):
    """The binding check is the one in the inserting transaction (another process may have taken
    the space since the early check): it refuses too, and leaves no file behind."""
    api = _quota_api(make_api)
    for i in (0, 1):
        assert _upload(api, _noise_png(i)).status_code == 200
    monkeypatch.setattr(api.services.store, "upload_bytes", lambda user_id: 0)
    assert_error(_upload(api, _noise_png(2)), 413, "upload_quota_exceeded", "file")
    assert len(os.listdir(api.settings.data_dir / "uploads")) == 2


def test_delete_is_owner_only(api):
    upload_id = _upload(api, _image_bytes("PNG")).json()["id"]
    assert_error(api.client.delete(f"/backend/uploads/{upload_id}", headers=api.bob), 404, "not_found")
    assert_error(api.client.delete("/backend/uploads/media_nope", headers=api.alice), 404, "not_found")
    assert api.client.delete(f"/backend/uploads/{upload_id}", headers=api.alice).status_code == 200
    assert os.listdir(api.settings.data_dir / "uploads") == []
    assert_error(api.client.delete(f"/backend/uploads/{upload_id}", headers=api.alice), 404, "not_found")
    r = api.create(inpaint_items=[{"kind": "upload", "upload_id": upload_id}])
    assert_error(r, 400, "invalid_request", "inpaint_items")


def test_list_is_newest_first_with_usage(api):
    now = [1000.0]  # the store's clock, set per upload (it may be read more than once per request)
    api.services.store.clock = lambda: now[0]
    older = _upload(api, _image_bytes("PNG"), name="a.png").json()
    now[0] = 2000.0
    newer = _upload(api, _image_bytes("JPEG"), name="b.jpg").json()
    now[0] = 3000.0
    _upload(api, _image_bytes("PNG"), headers=api.bob)
    body = api.client.get("/backend/uploads", headers=api.alice).json()
    assert [i["id"] for i in body["items"]] == [newer["id"], older["id"]]
    assert body["items"][1] == older  # the upload's answer and its listing agree
    assert older["file_name"] == "a.png" and older["created_at"] == 1000.0
    assert older["expires_at"] == 1000.0 + api.settings.upload_retention_seconds
    assert body["used_bytes"] == older["bytes"] + newer["bytes"] > 0
    assert body["quota_bytes"] == api.settings.upload_quota_bytes


def test_delete_while_a_task_needs_it_is_409(make_api):
    api = make_api(workers=0)  # the task stays queued
    upload_id = _upload(api, _image_bytes("PNG")).json()["id"]
    task_id = api.create(inpaint_items=[{"kind": "upload", "upload_id": upload_id}]).json()["id"]
    error = assert_error(api.client.delete(f"/backend/uploads/{upload_id}", headers=api.alice),
                         409, "upload_in_use")
    assert task_id in error["message"]
    assert api.client.post(f"/backend/nf/tasks/{task_id}/cancel", headers=api.alice).status_code == 200
    assert api.client.delete(f"/backend/uploads/{upload_id}", headers=api.alice).status_code == 200


# -- expiry and files on disk -------------------------------------------------------------------
def test_prune_removes_old_uploads_but_keeps_those_a_task_needs(make_api):
    api = make_api(workers=0)
    api.services.store.clock = lambda: 1000.0
    needed, old = (_upload(api, _image_bytes("PNG")).json()["id"] for _ in range(2))
    task_id = api.create(inpaint_items=[{"kind": "upload", "upload_id": needed}]).json()["id"]
    retention = api.settings.upload_retention_seconds
    assert prune_uploads(api.services, now=1000.0 + retention - 1) == 0
    assert prune_uploads(api.services, now=1000.0 + retention + 1) == 1
    folder = api.settings.data_dir / "uploads"
    assert api.services.store.upload(old) is None and sorted(os.listdir(folder)) == [f"{needed}.png"]
    api.services.store.request_cancel(task_id, api.services.store.task(task_id)["user_id"])
    api.services.store.clock = lambda: 1000.0 + retention + 1
    assert prune_uploads(api.services) == 1  # ``now`` defaults to the store's clock
    assert os.listdir(folder) == []


def test_prune_sweeps_stray_files_once_they_are_old(api):
    kept = _upload(api, _image_bytes("PNG")).json()["id"]
    folder = api.settings.data_dir / "uploads"
    stale, fresh = folder / ".media_x.tmp", folder / "media_y.png"
    for path in (stale, fresh):
        path.write_bytes(b"x")
    hour_ago = time.time() - 3700
    os.utime(stale, (hour_ago, hour_ago))
    os.utime(folder / f"{kept}.png", (hour_ago, hour_ago))  # old but listed: stays
    assert prune_uploads(api.services) == 0
    assert sorted(os.listdir(folder)) == sorted([f"{kept}.png", "media_y.png"])


def test_files_are_private(api):
    folder = api.settings.data_dir / "uploads"
    folder.mkdir(mode=0o755)  # made by an older version
    upload_id = _upload(api, _image_bytes("PNG")).json()["id"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / f"{upload_id}.png").stat().st_mode) == 0o600


def test_task_whose_upload_vanished_fails_cleanly(make_api):
    """Creation checks the upload outside the task's insert, so a delete or prune can slip in
    between: the task then fails with a reason instead of crashing its worker."""
    from sqlalchemy import delete

    from sorakit.store.schema import uploads
    from sorakit.worker import WorkerPool

    api = make_api(workers=0)
    upload_id = _upload(api, _image_bytes("PNG")).json()["id"]
    task_id = api.create(inpaint_items=[{"kind": "upload", "upload_id": upload_id}]).json()["id"]
    with api.services.store.engine.begin() as conn:  # the delete that won the race
        conn.execute(delete(uploads).where(uploads.c.id == upload_id))
    pool = WorkerPool(api.services, 1)
    pool.start()
    try:
        task = api.wait(task_id)
    finally:
        pool.stop()
    assert task["status"] == "failed" and "uploaded image" in task["failure_reason"]
