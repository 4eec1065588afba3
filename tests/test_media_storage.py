"""Media storage behind one interface: a local folder, a shared folder, or an S3-compatible bucket.

The bucket is moto's standalone server on 127.0.0.1 (a real HTTP endpoint, no network beyond
loopback) with dummy credentials: workers upload finished files to it, inputs are fetched from
it, links are its presigned GET URLs, and deleting a draft deletes its objects.
"""

from __future__ import annotations

import html
import io
import os
import re
import stat
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import boto3
import numpy as np
import openai
import pytest
import requests
from conftest import assert_error
from PIL import Image

from sorakit.client.embedded import EmbeddedServer
from sorakit.config import load_settings
from sorakit.media.encode import decode_frames, probe
from sorakit.media.storage import (MAX_PRESIGN_SECONDS, LocalStorage, MediaMissing, S3Storage, StorageError,
                                   open_storage, upload_key)
from sorakit.server import auth
from sorakit.server.maintenance import ORPHAN_GRACE, run_once, sweep_media

moto_server = pytest.importorskip("moto.server")
SECRET = "dummy-secret-never-shown"


# -- the bucket ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Dummy credentials, and nothing of the developer's AWS setup (files, profiles, endpoints)."""
    for key in list(os.environ):
        if key.startswith("AWS_") and key != "AWS_CA_BUNDLE":
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


class Bucket:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.name = f"sorakit-{uuid.uuid4().hex[:10]}"
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.client.create_bucket(Bucket=self.name)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents") or [])

    def media(self, prefix: str = "pre") -> dict:
        """The settings that put an app's media in this bucket."""
        return {"media": f"s3://{self.name}/{prefix}", "s3_endpoint_url": self.endpoint}


@pytest.fixture
def bucket(endpoint, aws_env) -> Bucket:
    return Bucket(endpoint)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _image_bytes(colour=(30, 200, 60), size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _upload(api, data: bytes):
    return api.client.post("/backend/uploads", files={"file": ("frame.png", data, "image/png")},
                           headers=api.alice)


def _finished(api, **body) -> dict:
    r = api.create(**body)
    assert r.status_code == 200, r.text
    task = api.wait(r.json()["id"])
    assert task["status"] == "succeeded", task
    return task


def _download(url: str, dest: Path) -> Path:
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, r.text[:300]
    dest.write_bytes(r.content)
    return dest


# -- LocalStorage ---------------------------------------------------------------------------------
def test_local_storage_operations(tmp_path):
    media = LocalStorage(tmp_path / "media", tmp_path / "uploads")
    src = tmp_path / "made.mp4"
    src.write_bytes(b"video bytes")
    media.put("gen_a/video.mp4", src)
    kept = tmp_path / "media" / "gen_a" / "video.mp4"
    assert not src.exists() and kept.read_bytes() == b"video bytes"  # moved, not copied
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert media.fetch("gen_a/video.mp4", tmp_path / "elsewhere") == kept  # the file itself
    assert not (tmp_path / "elsewhere").exists()
    assert media.local_path("gen_a/video.mp4") == kept and media.url("gen_a/video.mp4", 60) is None
    assert media.exists("gen_a/video.mp4") and not media.exists("gen_a/thumbnail.webp")
    with pytest.raises(MediaMissing):
        media.fetch("gen_a/thumbnail.webp", tmp_path)
    # uploads keep the layout of earlier versions: <data_dir>/uploads
    (tmp_path / "image.png").write_bytes(b"png")
    media.put(upload_key("media_x.png"), tmp_path / "image.png")
    assert (tmp_path / "uploads" / "media_x.png").read_bytes() == b"png"
    assert [e.key for e in media.entries("uploads")] == ["uploads/media_x.png"]
    assert [e.key for e in media.entries("gen_a")] == ["gen_a/video.mp4"]
    media.delete(upload_key("media_x.png"))
    media.delete(upload_key("media_x.png"))  # a missing file is no error
    assert not (tmp_path / "uploads" / "media_x.png").exists()
    assert media.delete_prefix("gen_a") == 1 and not kept.parent.exists()
    assert media.delete_prefix("gen_a") == 0
    for bad in ("../secret.key", "gen_a/../../x", "", "gen_a//video.mp4", "a\\b"):
        with pytest.raises(StorageError):
            media.local_path(bad)


def test_open_storage_follows_the_media_setting(tmp_path, aws_env):
    default = open_storage(load_settings({"data_dir": tmp_path / "d"}, env={}))
    assert isinstance(default, LocalStorage)
    assert default.root == tmp_path / "d" / "media" and default.uploads_root == tmp_path / "d" / "uploads"
    shared = open_storage(load_settings({"data_dir": tmp_path / "d", "media": str(tmp_path / "nfs")}, env={}))
    assert shared.root == tmp_path / "nfs" and shared.uploads_root == tmp_path / "nfs" / "uploads"
    s3 = open_storage(load_settings({"data_dir": tmp_path / "d", "media": "s3://b/some/prefix/",
                                     "s3_endpoint_url": "http://127.0.0.1:9", "s3_region": "eu-west-1"}, env={}))
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("b", "some/prefix")
    assert s3.origin == "http://127.0.0.1:9" and s3.local_path("gen_a/video.mp4") is None
    assert SECRET not in s3.describe()


def test_without_credentials_the_server_starts_and_answers_a_readable_503(make_api, endpoint, aws_env,
                                                                          monkeypatch, caplog):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    api = make_api(workers=0, media="s3://b/p", s3_endpoint_url=endpoint)
    media = api.services.media
    assert not media.has_credentials() and media.origin == endpoint
    assert "finds no credentials" in caplog.text
    with pytest.raises(StorageError, match="no usable storage credentials"):
        media.url("gen_a/video.mp4", 60)
    error = assert_error(_upload(api, _image_bytes()), 503, "storage_unavailable")
    assert "no usable storage credentials" in error["message"]


# -- S3Storage --------------------------------------------------------------------------------------
def test_s3_storage_operations(bucket, tmp_path):
    media = S3Storage(bucket.name, "base/", endpoint_url=bucket.endpoint, region="us-east-1",
                      staging=tmp_path / "staging")
    src = tmp_path / "made.mp4"
    src.write_bytes(b"video bytes")
    media.put("gen_a/video.mp4", src)
    assert not src.exists()  # uploaded, then the temp copy deleted
    assert bucket.keys() == ["base/gen_a/video.mp4"]
    head = bucket.client.head_object(Bucket=bucket.name, Key="base/gen_a/video.mp4")
    assert head["ContentType"] == "video/mp4" and head["CacheControl"] == "private, max-age=3600"
    assert media.exists("gen_a/video.mp4") and not media.exists("gen_a/other.mp4")

    got = media.fetch("gen_a/video.mp4", tmp_path / "inputs")
    assert got.parent == tmp_path / "inputs" and got.read_bytes() == b"video bytes"
    assert stat.S_IMODE(got.stat().st_mode) == 0o600 and stat.S_IMODE(got.parent.stat().st_mode) == 0o700
    with pytest.raises(MediaMissing):
        media.fetch("gen_a/other.mp4", tmp_path / "inputs")
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == [got.name]  # no partial file left

    url = media.url("gen_a/video.mp4", 120)
    assert url.startswith(f"{bucket.endpoint}/{bucket.name}/base/gen_a/video.mp4?")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["120"]
    r = requests.get(url, timeout=10)
    assert r.status_code == 200 and r.content == b"video bytes"
    # SigV4 links live 7 days at most: a longer TTL is capped, not refused
    long = parse_qs(urlsplit(media.url("gen_a/video.mp4", 30 * 86400)).query)
    assert long["X-Amz-Expires"] == [str(MAX_PRESIGN_SECONDS)]
    named = requests.get(media.url("gen_a/video.mp4", 60, filename='my "kite".mp4'), timeout=10)
    assert named.headers["Content-Disposition"] == 'attachment; filename="my kite.mp4"'

    for name in ("thumbnail.webp", "spritesheet.jpg"):
        (tmp_path / name).write_bytes(name.encode())
        media.put(f"gen_a/{name}", tmp_path / name)
    (tmp_path / "b.mp4").write_bytes(b"other")
    media.put("gen_b/video.mp4", tmp_path / "b.mp4")
    (tmp_path / "u.png").write_bytes(b"png")
    media.put(upload_key("media_x.png"), tmp_path / "u.png", content_type="image/png")
    assert bucket.keys("base/uploads/") == ["base/uploads/media_x.png"]
    assert sorted(e.key for e in media.entries("gen_a")) == ["gen_a/spritesheet.jpg", "gen_a/thumbnail.webp",
                                                           "gen_a/video.mp4"]
    assert len(list(media.entries(""))) == 5
    assert [e.size for e in media.entries("uploads")] == [3]
    assert media.delete_prefix("gen_a") == 3
    assert bucket.keys() == ["base/gen_b/video.mp4", "base/uploads/media_x.png"]  # gen_b is not under gen_a
    media.delete(upload_key("media_x.png"))
    media.delete(upload_key("media_x.png"))  # a missing object is no error
    assert bucket.keys() == ["base/gen_b/video.mp4"]


def test_s3_failures_are_readable_and_hold_no_secret(endpoint, aws_env, tmp_path):
    media = S3Storage("no-such-bucket-here", "p", endpoint_url=endpoint, staging=tmp_path)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(StorageError) as caught:
        media.put("gen_a/video.mp4", tmp_path / "f")
    assert "NoSuchBucket" in str(caught.value) and SECRET not in str(caught.value)
    assert (tmp_path / "f").exists()  # not deleted when the upload failed
    unreachable = S3Storage("b", "p", endpoint_url="http://127.0.0.1:9", staging=tmp_path)
    with pytest.raises(StorageError, match="could not be reached"):
        unreachable.fetch("gen_a/video.mp4", tmp_path / "in")


# -- the whole system on a bucket ---------------------------------------------------------------
def test_a_video_is_made_stored_linked_downloaded_and_deleted_in_the_bucket(make_api, bucket, tmp_path):
    api = make_api(**bucket.media())
    task = _finished(api, n_frames=12)
    gen = task["generations"][0]
    prefix = f"pre/{gen['id']}/"
    assert bucket.keys(prefix) == [prefix + n for n in ("spritesheet.jpg", "thumbnail.webp", "video.mp4")]
    # the links are the bucket's own presigned GETs, as long-lived as /assets links would be
    for url in (gen["url"], gen["downloadable_url"], gen["encodings"]["source"]["path"], gen["thumbnail_url"]):
        assert url.startswith(f"{bucket.endpoint}/{bucket.name}/{prefix}"), url
        assert "/assets/" not in url
    assert parse_qs(urlsplit(gen["url"]).query)["X-Amz-Expires"] == [str(api.settings.link_ttl_seconds)]
    video = _download(gen["url"], tmp_path / "v.mp4")
    assert probe(video).n_frames == 12 and len(list(decode_frames(video))) == 12
    assert gen["video_bytes"] == video.stat().st_size
    thumb = requests.get(gen["thumbnail_url"], timeout=10)
    assert thumb.headers["Content-Type"] == "image/webp" and Image.open(io.BytesIO(thumb.content)).size
    # nothing of the video stayed on the API's disk: temp files were cleaned up
    assert _files(api.settings.media_dir) == [] and _files(api.settings.data_dir / "uploads") == []
    # an /assets link made before the switch to a bucket is sent there
    old = api.services.signer.sign(f"/assets/{gen['id']}/video.mp4")
    r = api.client.get(old, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"].startswith(f"{bucket.endpoint}/{bucket.name}/{prefix}")
    assert api.client.get("/assets/gen_x/video.mp4?se=x&sp=r&sig=y").status_code == 403

    r = api.client.delete(f"/backend/project_y/profile/drafts/{gen['id']}", headers=api.alice)
    assert r.status_code == 200, r.text
    assert bucket.keys(prefix) == []
    assert requests.get(gen["url"], timeout=10).status_code == 404


def test_links_are_made_for_the_public_address_of_the_bucket(make_api, bucket, tmp_path):
    """Nodes reach the bucket at one address, clients at another (``s3_public_url``): the files go
    through the first, the presigned links name the second, and they work there."""
    public = bucket.endpoint.replace("127.0.0.1", "localhost")
    api = make_api(**bucket.media(), s3_public_url=public)
    gen = _finished(api, n_frames=6)["generations"][0]
    assert gen["url"].startswith(f"{public}/{bucket.name}/pre/{gen['id']}/")
    assert probe(_download(gen["url"], tmp_path / "v.mp4")).n_frames == 6
    assert api.services.media.origin == public


def test_posts_and_the_public_page_link_to_the_bucket(make_api, bucket):
    api = make_api(**bucket.media())
    gen = _finished(api, n_frames=2)["generations"][0]
    body = {"attachments_to_create": [{"generation_id": gen["id"], "kind": "sora"}], "post_text": "kite"}
    post = api.client.post("/backend/project_y/post", json=body, headers=api.alice).json()["post"]
    public = api.client.get(f"/backend/project_y/post/{post['id']}", headers=api.bob).json()["post"]
    url = public["attachments"][0]["url"]
    assert url.startswith(f"{bucket.endpoint}/{bucket.name}/pre/{gen['id']}/video.mp4?")
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["3600"]  # the page's short links
    page = api.client.get(f"/p/{post['id']}")
    src = html.unescape(re.search(r'<video [^>]*src="([^"]+)"', page.text).group(1))
    assert src.startswith(f"{bucket.endpoint}/{bucket.name}/pre/") and requests.get(src, timeout=10).ok
    # the pages let the browser load media from the bucket, and from nowhere else
    for csp in (page.headers["content-security-policy"], api.client.get("/").headers["content-security-policy"]):
        media_src = next(d for d in csp.split("; ") if d.startswith("media-src"))
        assert media_src == f"media-src 'self' {bucket.endpoint} blob:", csp


def test_image_to_video_and_a_remix_read_their_inputs_from_the_bucket(make_api, bucket, tmp_path):
    api = make_api(default_concurrency=5, **bucket.media())
    r = _upload(api, _image_bytes())
    assert r.status_code == 200, r.text
    upload_id = r.json()["id"]
    assert bucket.keys("pre/uploads/") == [f"pre/uploads/{upload_id}.png"]
    assert _files(api.settings.data_dir / "uploads") == []  # only staged there while it was checked
    head = bucket.client.head_object(Bucket=bucket.name, Key=f"pre/uploads/{upload_id}.png")
    assert head["ContentType"] == "image/png"

    task = _finished(api, n_frames=6, inpaint_items=[{"kind": "upload", "upload_id": upload_id}])
    first = next(decode_frames(_download(task["generations"][0]["url"], tmp_path / "i2v.mp4")))
    assert np.abs(first.reshape(-1, 3).mean(axis=0) - (30, 200, 60)).max() < 12  # started from the image

    source = task["generations"][0]
    remix = _finished(api, prompt="the same at night", remix_target_id=source["id"], seed=3)
    mixed = remix["generations"][0]
    assert mixed["source_generation_id"] == source["id"] and mixed["url"].startswith(bucket.endpoint)
    assert probe(_download(mixed["url"], tmp_path / "remix.mp4")).n_frames == 6

    path = f"/backend/project_y/profile/drafts/{source['id']}/long_video_extension"
    r = api.client.post(path, json={"user_prompt": "more", "extension_duration_s": 1}, headers=api.alice)
    assert r.status_code == 200, r.text
    longer = api.wait(r.json()["id"])
    assert longer["status"] == "succeeded", longer
    extended = _download(longer["generations"][0]["url"], tmp_path / "extended.mp4")
    assert probe(extended).n_frames == longer["generations"][0]["n_frames"] > 6
    assert _files(api.settings.media_dir) == []  # the inputs fetched for the tasks went with them

    r = api.client.delete(f"/backend/uploads/{upload_id}", headers=api.alice)
    assert r.status_code == 200, r.text
    assert bucket.keys("pre/uploads/") == []


def test_a_missing_input_or_an_unusable_bucket_fails_the_task_readably(make_api, bucket, endpoint):
    api = make_api(**bucket.media())
    source = _finished(api, n_frames=3)["generations"][0]
    bucket.client.delete_object(Bucket=bucket.name, Key=f"pre/{source['id']}/video.mp4")  # lost meanwhile
    r = api.create(prompt="again", remix_target_id=source["id"])
    task = api.wait(r.json()["id"])
    assert task["status"] == "failed" and "was deleted" in task["failure_reason"], task

    broken = make_api(media="s3://no-such-bucket-at-all/x", s3_endpoint_url=endpoint)
    task = broken.wait(broken.create(n_frames=2).json()["id"])
    reason = task["failure_reason"]
    assert task["status"] == "failed" and task["generations"][0]["error_reason"] == "storage_error", task
    assert reason.startswith("The finished video could not be stored: the bucket answered NoSuchBucket"), reason
    assert SECRET not in reason and str(broken.settings.data_dir) not in reason
    assert _files(broken.settings.media_dir) == []
    # an upload the bucket refuses is a readable 503, not a 500, and nothing stays on disk
    error = assert_error(_upload(broken, _image_bytes()), 503, "storage_unavailable")
    assert "NoSuchBucket" in error["message"] and SECRET not in error["message"]
    assert _files(broken.settings.data_dir / "uploads") == []


def test_maintenance_sweeps_orphaned_objects_of_the_bucket(make_api, bucket, tmp_path, monkeypatch):
    api = make_api(workers=0, **bucket.media())
    store = api.services.store
    (tmp_path / "x").write_bytes(b"x")
    api.services.media.put("gen_orphan/video.mp4", tmp_path / "x")
    (tmp_path / "u").write_bytes(b"u")
    api.services.media.put(upload_key("media_stray.png"), tmp_path / "u")
    kept = _upload(api, _image_bytes()).json()["id"]
    assert sweep_media(api.services, now=time.time())[1] == 0  # too young
    later = time.time() + ORPHAN_GRACE + 5
    from sorakit.server import maintenance, uploads

    maintenance._bucket_sweeps.clear()
    assert sweep_media(api.services, now=later)[1] == 1
    assert bucket.keys("pre/gen_") == []
    # uploads no row lists go once an hour old (file times are wall-clock)
    uploads._listed.clear()
    store.clock = lambda: time.time()
    run_once(api.services)
    assert bucket.keys("pre/uploads/") == [f"pre/uploads/{kept}.png", "pre/uploads/media_stray.png"]
    uploads._listed.clear()
    an_hour_on = SimpleNamespace(time=lambda: time.time() + uploads.STRAY_AGE + 5, monotonic=time.monotonic)
    monkeypatch.setattr(uploads, "time", an_hour_on)
    assert uploads._sweep_strays(api.services) == 1
    assert bucket.keys("pre/uploads/") == [f"pre/uploads/{kept}.png"]


@pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
def test_v1_content_redirects_to_the_bucket_and_the_sdk_follows(bucket, tmp_path):
    """Through a real server whose worker is another process: it needs only the bucket."""
    settings = load_settings({"data_dir": tmp_path / "v1", "workers": 1, "worker_mode": "process",
                              **bucket.media()}, env={})
    server = EmbeddedServer(settings).start()
    try:
        store = server.services.store
        user = store.create_user("app")
        key = auth.issue(store, server.services.jwt_key, user["id"], 3600)[0]
        client = openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0)
        video = client.videos.create_and_poll(prompt="a lighthouse at dusk", seconds="4", size="720x1280",
                                              poll_interval_ms=200)
        assert video.status == "completed", video
        client.videos.download_content(video.id).write_to_file(tmp_path / "v.mp4")
        thumb = client.videos.download_content(video.id, variant="thumbnail").read()
        info = probe(tmp_path / "v.mp4")
        assert (info.width, info.height) == (720, 1280) and info.n_frames > 0
        assert Image.open(io.BytesIO(thumb)).size
        # a plain GET is a redirect to the bucket, which serves Range itself
        r = requests.get(f"{server.url}/v1/videos/{video.id}/content", allow_redirects=False, timeout=10,
                         headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 307 and r.headers["location"].startswith(f"{bucket.endpoint}/{bucket.name}/pre/")
        ranged = requests.get(r.headers["location"], headers={"Range": "bytes=0-9"}, timeout=10)
        assert ranged.status_code == 206 and len(ranged.content) == 10
        assert _files(settings.data_dir / "media") == []
        client.videos.delete(video.id)
        assert bucket.keys("pre/gen_") == []
    finally:
        server.stop()


# -- a shared folder ------------------------------------------------------------------------------
def test_a_shared_folder_holds_drafts_and_uploads(make_api, tmp_path):
    shared = tmp_path / "shared-mount"
    api = make_api(media=str(shared))
    upload_id = _upload(api, _image_bytes()).json()["id"]
    assert (shared / "uploads" / f"{upload_id}.png").is_file()
    gen = _finished(api, n_frames=4, inpaint_items=[{"kind": "upload", "upload_id": upload_id}])["generations"][0]
    assert sorted(p.name for p in (shared / gen["id"]).iterdir()) == ["spritesheet.jpg", "thumbnail.webp",
                                                                       "video.mp4"]
    assert stat.S_IMODE((shared / gen["id"] / "video.mp4").stat().st_mode) == 0o600
    assert not (api.settings.data_dir / "media").exists() and not (api.settings.data_dir / "uploads").exists()
    assert "/assets/" in gen["url"]  # served by the server, as before
    r = api.client.get(gen["url"])
    assert r.status_code == 200 and r.content == (shared / gen["id"] / "video.mp4").read_bytes()
    assert api.client.delete(f"/backend/project_y/profile/drafts/{gen['id']}", headers=api.alice).status_code == 200
    assert not (shared / gen["id"]).exists()


def test_the_sorakit_client_downloads_from_the_bucket(bucket, tmp_path):
    from sorakit.client import SoraClient

    settings = load_settings({"data_dir": tmp_path / "c", "workers": 1, "worker_mode": "thread",
                              **bucket.media()}, env={})
    with EmbeddedServer(settings) as server:
        store = server.services.store
        token = auth.issue(store, server.services.jwt_key, store.create_user("me")["id"], 3600)[0]
        client = SoraClient(server.url, token)
        task = client.wait(client.create("a kite", n_frames=5)["id"])
        gen_id = task["generations"][0]["id"]
        client.download(gen_id, tmp_path / "v.mp4")
    assert probe(tmp_path / "v.mp4").n_frames == 5
    assert bucket.keys(f"pre/{gen_id}/")
