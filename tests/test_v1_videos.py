"""Issue 9: the official Videos API, driven by the real openai Python SDK over a real uvicorn server.

Apps written for ``client.videos`` change ``base_url`` and ``api_key`` and nothing else.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import openai
import pytest
import requests
from PIL import Image

from sorakit.client.embedded import EmbeddedServer
from sorakit.config import load_settings
from sorakit.ids import task_id, video_id
from sorakit.media.encode import decode_frames, probe
from sorakit.server import auth

try:
    from faultproxy import FaultProxy
except ImportError:  # pragma: no cover
    from tests.faultproxy import FaultProxy

# the SDK marks its videos API as retired (the official service closed): the point of this server
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
VIDEO_KEYS = {"id", "object", "model", "status", "progress", "created_at", "completed_at", "expires_at",
              "prompt", "seconds", "size", "remixed_from_video_id", "error"}


class Server:
    """A real uvicorn server on 127.0.0.1 over a temp data dir, and SDK clients for its users."""

    def __init__(self, data_dir: Path, **settings) -> None:
        self.settings = load_settings({"data_dir": data_dir, **settings}, env={})
        self.embedded = EmbeddedServer(self.settings).start()
        self.url = self.embedded.url
        self.services = self.embedded.services

    def key(self, name: str = "app", **limits) -> str:
        store = self.services.store
        user = store.user_by_name(name) or store.create_user(name, **limits)
        return auth.issue(store, self.services.jwt_key, user["id"], 3600)[0]

    def sdk(self, key: str | None = None, **options) -> openai.OpenAI:
        return openai.OpenAI(api_key=key or self.key(), base_url=self.url + "/v1", **options)

    def backend(self, key: str, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, headers={"Authorization": f"Bearer {key}"},
                                timeout=30, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("v1"), workers=1, default_concurrency=10)
    yield srv
    srv.embedded.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return server.sdk()


@pytest.fixture(scope="module")
def finished(client):
    """One default video (sora-2, 4 s, 720x1280), made once for the module."""
    video = client.videos.create_and_poll(prompt="a lighthouse at dusk", poll_interval_ms=200)
    assert video.status == "completed", video
    return video


def discard(client: openai.OpenAI, *ids: str) -> None:
    """Delete videos a test only needed queued: the module's one worker need not make them."""
    for vid in ids:
        client.videos.delete(vid)


def png(width: int, height: int, colour=(200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def test_create_answers_the_video_object_with_every_key(client):
    video = client.videos.create(prompt="a paper boat on a river", seconds="4", size="1280x720")
    raw = video.model_dump()
    assert set(raw) >= VIDEO_KEYS and raw["object"] == "video"
    assert video.id.startswith("video_") and video.status in ("queued", "in_progress")
    assert (video.model, video.seconds, video.size, video.prompt) == ("sora-2", "4", "1280x720",
                                                                      "a paper boat on a river")
    assert isinstance(video.progress, int) and video.error is None and video.completed_at is None
    discard(client, video.id)


def test_create_and_poll_then_download_all_three_variants(client, finished, tmp_path):
    assert finished.progress == 100 and finished.completed_at >= finished.created_at
    mp4 = tmp_path / "video.mp4"
    client.videos.download_content(finished.id).write_to_file(mp4)
    info = probe(mp4)
    assert (info.width, info.height, info.n_frames) == (720, 1280, 120)
    assert abs(info.duration_s - 4.0) < 0.05
    thumb = Image.open(io.BytesIO(client.videos.download_content(finished.id, variant="thumbnail").read()))
    assert thumb.format == "WEBP" and thumb.size[1] > thumb.size[0]
    sheet = Image.open(io.BytesIO(client.videos.download_content(finished.id, variant="spritesheet").read()))
    assert sheet.format == "JPEG" and sheet.size[0] > 0


def test_video_content_honours_range(server, client, finished):
    url = f"{server.url}/v1/videos/{finished.id}/content"
    headers = {"Authorization": f"Bearer {client.api_key}", "Range": "bytes=0-99"}
    r = requests.get(url, headers=headers, timeout=30)
    assert r.status_code == 206 and len(r.content) == 100 and r.content[4:8] == b"ftyp"


@pytest.mark.parametrize("seconds, size", [("8", "1792x1024"), ("12", "1024x1792")])
def test_the_mp4_has_exactly_the_asked_size_and_duration(client, tmp_path, seconds, size):
    video = client.videos.create_and_poll(prompt="a kite", seconds=seconds, size=size, poll_interval_ms=200)
    assert video.status == "completed" and (video.seconds, video.size) == (seconds, size)
    mp4 = tmp_path / "v.mp4"
    client.videos.download_content(video.id).write_to_file(mp4)
    info = probe(mp4)
    width, height = map(int, size.split("x"))
    assert (info.width, info.height, info.n_frames) == (width, height, int(seconds) * 30)
    assert abs(info.duration_s - int(seconds)) < 0.05


def test_poll_after_header_and_progress_that_never_goes_back(server, client):
    video = client.videos.create(prompt="a slow sunrise", seconds="8")
    seen, headers = [], set()
    while True:
        raw = client.videos.with_raw_response.retrieve(video.id)
        current = raw.parse()
        seen.append(current.progress)
        if current.status in ("completed", "failed"):
            break
        headers.add(raw.headers.get("openai-poll-after-ms"))
    assert current.status == "completed" and seen[-1] == 100
    assert seen == sorted(seen), seen
    assert headers and headers <= {"1000", "2000"}


def test_image_reference_as_a_file_starts_the_video(client, tmp_path):
    video = client.videos.create_and_poll(prompt="a red wall", size="720x1280", poll_interval_ms=200,
                                          input_reference=("red.png", png(720, 1280), "image/png"))
    assert video.status == "completed", video.error
    mp4 = tmp_path / "i2v.mp4"
    client.videos.download_content(video.id).write_to_file(mp4)
    first = next(decode_frames(mp4)).astype(int)
    assert abs(first[..., 0].mean() - 200) < 30 and first[..., 1].mean() < 90  # it starts on the image


def _form_create(server, key: str, **fields) -> requests.Response:
    """Multipart with no file part, as SDKs that send a reference URL build it."""
    parts = {k: (None, v) for k, v in fields.items()}
    return requests.post(server.url + "/v1/videos", files=parts, timeout=30,
                         headers={"Authorization": f"Bearer {key}"})


def test_image_reference_as_a_data_url(server, client):
    url = "data:image/png;base64," + base64.b64encode(png(1280, 720, (20, 20, 220))).decode()
    r = _form_create(server, client.api_key, prompt="blue", size="1280x720", **{"input_reference[image_url]": url})
    assert r.status_code == 200, r.text
    task = server.services.store.task(task_id(r.json()["id"]))
    assert task["inpaint_items"][0]["upload_id"].startswith("media_")
    discard(client, r.json()["id"])


def test_a_network_image_url_is_refused_not_fetched(server, client):
    r = _form_create(server, client.api_key, prompt="x", **{"input_reference[image_url]": "https://example.com/a.png"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_reference"
    assert "does not fetch" in r.json()["error"]["message"]


@pytest.mark.parametrize("kwargs, param", [
    ({"input_reference": ("wide.png", png(1280, 720), "image/png"), "size": "720x1280"}, "input_reference"),
    ({"size": "640x480"}, "size"),
    ({"size": "1920x1080"}, "size"),  # sora-2-pro only
    ({"seconds": "5"}, "seconds"),
    ({"model": "dall-e-3"}, "model"),
])
def test_bad_requests_are_400s_naming_the_field(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.create(prompt="x", **kwargs)
    assert caught.value.status_code == 400 and caught.value.body["param"] == param


def test_the_pro_model_takes_1080p(client):
    video = client.videos.create(prompt="x", model="sora-2-pro", size="1920x1080")
    assert (video.model, video.size) == ("sora-2-pro", "1920x1080")
    discard(client, video.id)


def test_json_create_for_older_callers(server, client):
    r = requests.post(server.url + "/v1/videos", json={"prompt": "json caller", "seconds": 4, "size": "1280x720"},
                      headers={"Authorization": f"Bearer {client.api_key}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["seconds"] == "4" and set(r.json()) >= VIDEO_KEYS
    discard(client, r.json()["id"])


def test_list_pages_with_after_and_order(server):
    key = server.key("lister")
    client = server.sdk(key)
    made = [client.videos.create(prompt=f"clip {i}").id for i in range(5)]
    first = client.videos.list(limit=2)
    assert [v.id for v in first.data] == made[::-1][:2] and first.has_more
    second = client.videos.list(limit=2, after=first.data[-1].id)
    assert [v.id for v in second.data] == made[::-1][2:4]
    assert [v.id for v in client.videos.list(limit=100)] == made[::-1]  # the SDK follows pages itself
    assert [v.id for v in client.videos.list(order="asc", limit=3).data] == made[:3]
    raw = requests.get(server.url + "/v1/videos", params={"limit": 2},
                       headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
    assert set(raw) == {"object", "data", "first_id", "last_id", "has_more"} and raw["object"] == "list"
    assert raw["first_id"] == made[-1] and raw["last_id"] == made[-2]
    discard(client, *made)


def test_delete_removes_the_video_and_its_files(server):
    client = server.sdk(server.key("deleter"))
    video = client.videos.create_and_poll(prompt="short lived", poll_interval_ms=200)
    gen = server.services.store.generations_for([task_id(video.id)])[task_id(video.id)][0]
    folder = server.settings.media_dir / gen["id"]
    assert folder.is_dir()
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (video.id, "video.deleted", True)
    assert not folder.exists()
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)


def test_sdk_error_classes(server):
    bad = openai.OpenAI(api_key="not-a-key", base_url=server.url + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.videos.list()
    client = server.sdk(server.key("errors", concurrency=1), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve("video_doesnotexist")
    slot = client.videos.create(prompt="takes the only slot", seconds="20")
    with pytest.raises(openai.RateLimitError) as caught:
        client.videos.create(prompt="one too many")
    assert caught.value.response.headers.get("retry-after")
    with pytest.raises(openai.NotFoundError):
        client.videos.remix("video_x", prompt="again")
    with pytest.raises(openai.BadRequestError, match="not supported"):
        client.videos.create_character(name="me", video=("me.mp4", b"\0" * 64, "video/mp4"))
    discard(client, slot.id)


def test_an_sdk_retry_after_a_lost_answer_makes_one_video(server):
    key = server.key("flaky")
    with FaultProxy(int(server.url.rsplit(":", 1)[1])) as proxy:
        proxy.add(r"^/v1/videos$", method="POST", drop_response=True, times=1)
        client = openai.OpenAI(api_key=key, base_url=proxy.url + "/v1", max_retries=2)
        video = client.videos.create(prompt="exactly once")
    mine = server.sdk(key).videos.list(limit=100).data
    assert [v.id for v in mine] == [video.id]
    again = server.sdk(key).videos.create(prompt="exactly once")  # a new call is a new video
    assert again.id != video.id
    discard(server.sdk(key), video.id, again.id)


def test_one_library_two_doors(server, client, finished):
    key = client.api_key
    drafts = server.backend(key, "GET", "/backend/project_y/profile/drafts", params={"limit": 100}).json()
    assert task_id(finished.id) in {d["task_id"] for d in drafts["items"]}
    web = server.backend(key, "POST", "/backend/nf/create", json={"prompt": "from the web", "n_frames": 30})
    web_video = client.videos.poll(video_id(web.json()["id"]), poll_interval_ms=200)
    assert web_video.status == "completed" and web_video.seconds == "1"
    body = client.videos.download_content(web_video.id).read()
    assert body[4:8] == b"ftyp"


def test_a_failed_video_says_why_with_a_code(tmp_path):
    srv = Server(tmp_path / "data", blocked_terms=["volcano"])
    try:
        video = srv.sdk().videos.create_and_poll(prompt="a volcano erupting", poll_interval_ms=200)
    finally:
        srv.embedded.stop()
    assert video.status == "failed" and video.error.code == "moderation_blocked" and video.error.message


# -- what the review found ----------------------------------------------------------------------
def _raw_create(server, key: str, retry: int, **body) -> requests.Response:
    return requests.post(server.url + "/v1/videos", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {key}", "x-stainless-retry-count": str(retry)})


def test_a_retry_of_a_refused_first_attempt_never_replays_an_older_video(server):
    key = server.key("solo", concurrency=1)
    first = _raw_create(server, key, 0, prompt="same", seconds="20")
    assert first.status_code == 200
    refused = _raw_create(server, key, 0, prompt="same", seconds="20")
    assert refused.status_code == 429
    retried = _raw_create(server, key, 1, prompt="same", seconds="20")
    assert retried.status_code == 429, "the retry was handed the first video"
    discard(server.sdk(key), first.json()["id"])


def test_a_refused_create_keeps_nothing_of_its_image(server):
    key = server.key("image-quota", concurrency=1)
    client = server.sdk(key, max_retries=0)
    slot = client.videos.create(prompt="takes the slot", seconds="20")
    for kwargs in ({"size": "720x1280"}, {"size": "1280x720"}):  # a 429, then a wrong aspect
        with pytest.raises((openai.RateLimitError, openai.BadRequestError)):
            client.videos.create(prompt="with an image", input_reference=("a.png", png(720, 1280), "image/png"),
                                 **kwargs)
    listing = server.backend(key, "GET", "/backend/uploads").json()
    assert listing["items"] == [] and listing["used_bytes"] == 0
    discard(client, slot.id)


def test_progress_handed_back_to_the_queue_keeps_its_mark(tmp_path):
    srv = Server(tmp_path / "data", workers=0)
    try:
        client = srv.sdk()
        video = client.videos.create(prompt="handed back")
        store = srv.services.store
        claim = store.claim("a-worker", 30, 3)
        store.set_progress(claim, 0.45)
        assert client.videos.retrieve(video.id).progress == 45
        store.release(claim)  # a graceful stop
        again = client.videos.retrieve(video.id)
        assert (again.status, again.progress) == ("queued", 45)
    finally:
        srv.embedded.stop()


def test_a_json_data_url_may_be_larger_than_other_strings(server, client):
    pixels = np.random.default_rng(1).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).resize((160, 90)).save(out, "PNG")
    url = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
    assert 25_000 < len(url) < 200_000
    r = _raw_create(server, client.api_key, 0, prompt="json data url", size="1280x720",
                    input_reference={"image_url": url})
    assert r.status_code == 200, r.text
    discard(client, r.json()["id"])


def test_json_bodies_on_v1_get_the_json_limit_and_multipart_past_its_limit_is_413(server, client):
    headers = {"Authorization": f"Bearer {client.api_key}"}
    big_json = requests.post(server.url + "/v1/videos", data=b'{"prompt": "' + b"x" * 400_000 + b'"}',
                             headers={**headers, "Content-Type": "application/json"}, timeout=30)
    assert big_json.status_code == 413 and big_json.json()["error"]["code"] == "request_too_large"

    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="input_reference"; filename="a.png"\r\n\r\n'
        for _ in range(22):
            yield b"x" * (1024 * 1024)

    big_form = requests.post(server.url + "/v1/videos", data=chunks(), timeout=30,
                             headers={**headers, "Content-Type": "multipart/form-data; boundary=b"})
    assert big_form.status_code == 413, big_form.text[:200]
