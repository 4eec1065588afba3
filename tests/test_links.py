"""Signed asset links: valid, expired, tampered, Range, HEAD, 416, public base URL."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest


@pytest.fixture
def finished(api):
    task = api.wait(api.create(n_frames=20).json()["id"])
    gen = task["generations"][0]
    path = api.settings.media_dir / gen["id"] / "video.mp4"
    return api, gen, path.read_bytes()


def _with(url: str, **changes) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return f"{parts.path}?{urlencode(query)}"


def _assert_refused(response, reason: str):
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/xml")
    assert "<Code>AuthenticationFailed</Code>" in response.text and reason in response.text


def test_valid_link_serves_the_file_without_credentials(finished):
    api, gen, data = finished
    r = api.client.get(gen["url"])
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "video/mp4" and int(r.headers["content-length"]) == len(data)
    assert r.headers["etag"] and r.headers["accept-ranges"] == "bytes"
    q = parse_qs(urlsplit(gen["url"]).query)
    assert set(q) == {"se", "sp", "sig"} and q["sp"] == ["r"]


def test_thumbnail_is_webp(finished):
    api, gen, _ = finished
    r = api.client.get(gen["encodings"]["thumbnail"]["path"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert r.content[:4] == b"RIFF" and r.content[8:12] == b"WEBP"


def test_expired_link_is_403(finished):
    api, gen, _ = finished
    path = urlsplit(gen["url"]).path
    old = api.services.signer.sign(path, now=time.time() - 2 * 86400)
    _assert_refused(api.client.get(old), "expiry")


def test_link_lifetime_is_configurable(make_api):
    api = make_api(link_ttl_seconds=120)
    gen = api.wait(api.create(n_frames=1).json()["id"])["generations"][0]
    se = parse_qs(urlsplit(gen["url"]).query)["se"][0]
    expires = time.mktime(time.strptime(se, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert 100 < expires - time.time() <= 121


@pytest.mark.parametrize("change", [
    {"sig": "A" * 43}, {"se": "2099-01-01T00:00:00Z"}, {"sp": "rw"}, {"sig": ""},
])
def test_altered_link_is_403(finished, change):
    api, gen, _ = finished
    _assert_refused(api.client.get(_with(gen["url"], **change)), "")


def test_signature_does_not_transfer_to_another_file(finished):
    api, gen, _ = finished
    parts = urlsplit(gen["url"])
    other = parts.path.replace("video.mp4", "thumbnail.webp") + "?" + parts.query
    _assert_refused(api.client.get(other), "did not match")


def test_range_requests(finished):
    api, gen, data = finished
    r = api.client.get(gen["url"], headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = api.client.get(gen["url"], headers={"Range": f"bytes={len(data) - 10}-"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    beyond = api.client.get(gen["url"], headers={"Range": f"bytes={len(data) + 5}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"


def test_head(finished):
    api, gen, data = finished
    r = api.client.head(gen["url"])
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) == len(data)
    assert r.headers["etag"] == api.client.get(gen["url"]).headers["etag"]


def test_every_listing_mints_fresh_links(finished):
    api, gen, data = finished
    time.sleep(1.05)
    again = api.client.get(f"/backend/project_y/profile/drafts/v2/{gen['id']}", headers=api.alice).json()
    assert again["draft"]["url"] != gen["url"]
    assert hashlib.sha256(api.client.get(again["draft"]["url"]).content).digest() == hashlib.sha256(data).digest()


def test_public_base_url(make_api):
    api = make_api(public_base_url="https://videos.example.org/sora/")
    gen = api.wait(api.create(n_frames=1).json()["id"])["generations"][0]
    assert gen["url"].startswith("https://videos.example.org/sora/assets/")


@pytest.mark.parametrize("value", ["bytes=abc", "bytes=5-2", "items=0-1", "bytes="])
def test_malformed_range_is_ignored_like_blob_storage(finished, value):
    api, gen, data = finished
    r = api.client.get(gen["url"], headers={"Range": value})
    assert r.status_code == 200 and r.content == data
