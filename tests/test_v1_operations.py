"""/v1/videos remix, edits and extensions through the real openai SDK over a real server: the
same operations as /backend (one task model, one quota), in the official API's shapes."""

from __future__ import annotations

import numpy as np
import openai
import pytest
from test_v1_videos import Server, discard  # noqa: F401  (the shared real-server harness)

from sorakit.media.encode import decode_frames, encode_mp4, probe

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("v1ops"), workers=1, default_concurrency=10)
    yield srv
    srv.embedded.stop()


def _by_id(client, path: str, **body):
    """``video={"id": ...}`` as JSON: openai-python 3.57's ``edit``/``extend`` accept only files
    there (its multipart extraction asserts on a dict), so the id form goes through ``post``."""
    return client.post(path, body=body, cast_to=openai.types.Video)


def _done(client, video):
    video = client.videos.poll(video.id, poll_interval_ms=50)
    assert video.status == "completed", video
    return video


def _frames(client, video_id: str, tmp_path) -> list[np.ndarray]:
    path = tmp_path / f"{video_id}.mp4"
    client.videos.download_content(video_id).write_to_file(path)
    return [f.astype(np.int16) for f in decode_frames(path)]


def test_remix_keeps_size_and_length_and_names_its_source(server, tmp_path):
    client = server.sdk()
    source = _done(client, client.videos.create(prompt="a tin robot", seconds="4", size="1280x720"))
    remix = client.videos.remix(source.id, prompt="a tin robot made of ice")
    assert remix.remixed_from_video_id == source.id and remix.status in ("queued", "in_progress")
    remix = _done(client, remix)
    assert (remix.size, remix.seconds, remix.remixed_from_video_id) == ("1280x720", "4", source.id)
    src, out = _frames(client, source.id, tmp_path), _frames(client, remix.id, tmp_path)
    assert len(out) == len(src) == 120
    fresh = _frames(client, _done(client, client.videos.create(prompt="a tin robot made of ice", seconds="4",
                                                               size="1280x720")).id, tmp_path)
    near = np.mean([np.abs(a - b).mean() for a, b in zip(src, out)])
    far = np.mean([np.abs(a - b).mean() for a, b in zip(src, fresh)])
    assert near < 0.75 * far, (near, far)
    # the same remix drafts appear on /backend, typed as a remix of the source's draft
    drafts = server.backend(server.key(), "GET", "/backend/project_y/profile/drafts").json()["items"]
    assert any(d["generation_type"] == "remix" for d in drafts)


def test_edits_take_a_video_id_or_a_file(server, tmp_path):
    client = server.sdk(server.key("editor"))
    source = _done(client, client.videos.create(prompt="a field of tulips", seconds="4"))
    edited = _done(client, _by_id(client, "/videos/edits", prompt="tulips in the rain", video={"id": source.id}))
    assert edited.remixed_from_video_id == source.id and edited.size == source.size
    # a file: any short clip, here 2 s of 320x240 at 10 fps
    clip = tmp_path / "clip.mp4"
    frames = [np.full((240, 320, 3), (i * 12) % 255, np.uint8) for i in range(20)]
    encode_mp4(frames, clip, width=320, height=240, fps=10)
    from_file = _done(client, client.videos.edit(prompt="now in colour", video=clip.read_bytes()))
    assert from_file.size == "1280x720" and from_file.seconds == "2" and from_file.remixed_from_video_id is None
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.edit(prompt="x", video=b"not a video at all")
    assert caught.value.body["param"] == "video"
    with pytest.raises(openai.NotFoundError):
        _by_id(client, "/videos/edits", prompt="x", video={"id": "video_nope"})


def test_extensions_make_one_longer_video(server, tmp_path):
    client = server.sdk(server.key("extender"))
    source = _done(client, client.videos.create(prompt="a train leaves", seconds="4", size="720x1280"))
    longer = _done(client, _by_id(client, "/videos/extensions", prompt="it crosses a bridge", seconds="4",
                                   video={"id": source.id}))
    assert (longer.seconds, longer.size) == ("8", "720x1280")
    path = tmp_path / "longer.mp4"
    client.videos.download_content(longer.id).write_to_file(path)
    info = probe(path)
    assert info.n_frames == 240 and info.duration_s == pytest.approx(8.0, abs=0.05)
    src = _frames(client, source.id, tmp_path)
    out = [f.astype(np.int16) for f in decode_frames(path)]
    assert max(np.abs(a - b).mean() for a, b in zip(src, out[:120])) < 3.0
    with pytest.raises(openai.BadRequestError) as caught:
        _by_id(client, "/videos/extensions", prompt="x", seconds="600", video={"id": source.id})
    assert caught.value.body["param"] == "seconds"
    unfinished = client.videos.create(prompt="still running", seconds="20")
    with pytest.raises(openai.BadRequestError, match="not completed"):
        _by_id(client, "/videos/extensions", prompt="x", seconds="4", video={"id": unfinished.id})
    discard(client, unfinished.id)


def test_an_sdk_retry_of_a_remix_makes_one_video(server):
    key = server.key("retrier")
    client = server.sdk(key)
    source = _done(client, client.videos.create(prompt="a lantern", seconds="4"))
    first = client.videos.remix(source.id, prompt="a lantern at dawn")
    again = client.with_options(max_retries=0).videos.remix(
        source.id, prompt="a lantern at dawn", extra_headers={"x-stainless-retry-count": "1"})
    assert again.id == first.id
    other = client.videos.remix(source.id, prompt="a lantern at dawn")  # a new call: a new video
    assert other.id != first.id


def test_edits_take_clips_as_large_as_uploads_and_refuse_both_forms(server, tmp_path):
    client = server.sdk(server.key("big-clips"))
    clip = tmp_path / "noisy.mp4"
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(20)]
    encode_mp4(frames, clip, width=640, height=360, fps=10)
    assert clip.stat().st_size > 512 * 1024  # past the 256 KB a JSON body may have
    edited = _done(client, client.videos.edit(prompt="calmer", video=clip.read_bytes()))
    assert edited.size == "1280x720" and edited.seconds == "2"
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.edit(prompt="x", video=clip.read_bytes(), extra_body={"video[id]": edited.id})
    assert caught.value.body["param"] == "video"
