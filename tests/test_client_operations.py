"""The library's verbs for building on a video (remix, extend, storyboard, variants, share)
against the real server app in-process, sync and async: real tasks, real MP4s, decoded."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient

from sorakit.client import AsyncSoraClient, RetryPolicy, SoraClient, errors
from sorakit.client.core import Core, storyboard_shots, timeline_text
from sorakit.media.encode import probe

BASE = "http://testserver"
FAST = {"poll_interval": (0.05, 0.1), "poll_max": 0.2, "retry": RetryPolicy(wait=False)}


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split()[1]


def client_for(api, http=None, user: str = "alice") -> SoraClient:
    return SoraClient(BASE, token_of(getattr(api, user)), http_client=http or api.client, **FAST)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_video(c: SoraClient, tmp_path: Path, n_frames: int = 30, **fields):
    return c.generate("a red kite over a grey sea", n_frames=n_frames, output=str(tmp_path / "source.mp4"),
                      **fields)


def task_count(api) -> int:
    from sqlalchemy import func, select

    from sorakit.store.schema import tasks

    with api.services.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(tasks)).scalar_one()


class Recorder:
    """Passes every request on, noting (method, path); ``hide_tasks`` makes ``tasks/{id}/v2``
    answer 404 like a server without it, so finished tasks are only found in the drafts."""

    def __init__(self, app, hide_tasks: bool = False) -> None:
        self.app, self.hide_tasks = app, hide_tasks
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
            if self.hide_tasks and scope["path"].startswith("/backend/nf/tasks/"):
                body = json.dumps({"error": {"message": "Not found", "type": "invalid_request_error",
                                             "param": None, "code": "not_found"}}).encode()
                await send({"type": "http.response.start", "status": 404,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def posts_to(self, path_re: str) -> int:
        return sum(1 for method, path in self.seen if method == "POST" and re.search(path_re, path))


@pytest.fixture
def wrapped():
    made: list[TestClient] = []

    def factory(wrapper) -> TestClient:
        made.append(TestClient(wrapper, raise_server_exceptions=False))
        return made[-1]

    yield factory
    for client in made:
        client.close()


# -- variants ----------------------------------------------------------------------------------
def test_variants_make_one_task_and_download_as_n_different_files(make_api, wrapped, tmp_path):
    api = make_api()
    rec = Recorder(api.app)
    c = client_for(api, wrapped(rec))
    result = c.generate("three kites", n_frames=30, variants=3, output=str(tmp_path / "{prompt_slug}.mp4"))
    assert rec.posts_to(r"^/backend/nf/bulk_create$") == 1 and rec.posts_to(r"^/backend/nf/create$") == 0
    assert result.paths == [tmp_path / f"three-kites-{n}.mp4" for n in (1, 2, 3)]
    assert [v.path for v in result.videos] == result.paths and result.path == result.paths[0]
    assert len({v.draft["id"] for v in result.videos}) == 3
    assert len({sha(p) for p in result.paths}) == 3  # three different videos, not one thrice
    for n, video in enumerate(result.videos, 1):
        info = probe(video.path)
        assert (info.n_frames, info.width, info.height) == (30, 352, 640)
        assert video.sha256 == sha(video.path)
        sidecar = json.loads(video.sidecar.read_text())
        assert (sidecar["variant"], sidecar["n_variants"]) == (n, 3)
        assert sidecar["generation_id"] == video.draft["id"] and sidecar["parameters"]["nsamples"] == 3
    assert result.task["n_variants"] == 3 and len(result.task["generations"]) == 3
    usage = c.usage()["rate_limit_and_credit_balance"]
    assert usage["estimated_num_videos_remaining"] == 100 - 3  # counted as three videos


def test_one_video_keeps_its_plain_name(make_api, tmp_path):
    c = client_for(make_api())
    result = c.generate("a single kite", n_frames=10, variants=1, output=str(tmp_path / "{prompt_slug}.mp4"))
    assert result.paths == [tmp_path / "a-single-kite.mp4"] and result.task["n_variants"] == 1
    assert "variant" not in json.loads(result.sidecar.read_text())


def test_variants_found_only_in_the_drafts_are_all_downloaded(make_api, wrapped, tmp_path):
    """A server like the live one: the task leaves pending and has no tasks/{id}/v2. Every
    draft of the task is collected from the drafts list, not only the first."""
    api = make_api(finished_window_seconds=0)
    c = client_for(api, wrapped(Recorder(api.app, hide_tasks=True)))
    task_id = c.create("two kites in the drafts", n_frames=10, variants=2)["id"]
    task = c.wait(task_id)
    assert task["status"] == "succeeded" and len(task["generations"]) == 2
    result = c.download_task(task, str(tmp_path / "{task_id}.mp4"))
    assert [p.name for p in result.paths] == [f"{task_id}-1.mp4", f"{task_id}-2.mp4"]
    assert all(probe(p).n_frames == 10 for p in result.paths) and sha(result.paths[0]) != sha(result.paths[1])


def test_download_task_by_id_waits_and_fetches_every_video(make_api, tmp_path):
    c = client_for(make_api())
    task_id = c.create("two kites later", n_frames=10, variants=2)["id"]
    result = c.download_task(task_id, str(tmp_path / "later.mp4"))
    assert [p.name for p in result.paths] == ["later-1.mp4", "later-2.mp4"]
    assert all(probe(p).n_frames == 10 for p in result.paths)


def test_bad_variants_are_refused_before_anything_is_sent(make_api):
    api = make_api()
    c = client_for(api)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="variants"):
            c.create("x", variants=bad)
    with pytest.raises(errors.BadRequestError) as info:
        c.create("too many kites", n_frames=5, variants=9)  # above the server's max_variants
    assert info.value.param == "nsamples"
    assert task_count(api) == 0


# -- remix -------------------------------------------------------------------------------------
def test_remix_of_a_draft_and_of_a_post(make_api, tmp_path):
    api = make_api()
    c = client_for(api)
    source = source_video(c, tmp_path, orientation="landscape")
    created = c.remix(source.draft["id"], "a blue kite over a calm sea", strength=0.6)
    assert created["id"].startswith("task_") and created["operation"] == "remix"
    result = c.download_task(c.wait(created["id"]), str(tmp_path / "remix.mp4"))
    info = probe(result.path)
    # not given: size, orientation and length follow the source
    assert (info.width, info.height, info.n_frames) == (640, 352, 30)
    assert sha(result.path) != source.sha256
    config = result.draft["creation_config"]
    assert config["remix_strength"] == 0.6 and config["source_generation_id"] == source.draft["id"]

    post = c.share(source.draft["id"])
    from_post = c.remix(post["id"], "a green kite", n_frames=15, orientation="portrait")
    result = c.download_task(c.wait(from_post["id"]), str(tmp_path / "from-post.mp4"))
    info = probe(result.path)
    assert (info.width, info.height, info.n_frames) == (352, 640, 15)
    assert result.draft["creation_config"]["remix_target_post"] == {"id": post["id"]}


def test_remix_with_variants_and_an_idempotency_key(make_api, tmp_path):
    api = make_api()
    c = client_for(api)
    source = source_video(c, tmp_path, n_frames=10)
    first = c.remix(source.draft["id"], "two remixes", variants=2, idempotency_key="remix-once")
    again = c.remix(source.draft["id"], "two remixes", variants=2, idempotency_key="remix-once")
    assert first["id"] == again["id"] and task_count(api) == 2
    result = c.download_task(c.wait(first["id"]), str(tmp_path / "r.mp4"))
    assert [p.name for p in result.paths] == ["r-1.mp4", "r-2.mp4"]
    assert all(probe(p).n_frames == 10 for p in result.paths)


def test_remix_of_something_that_is_not_there(make_api, tmp_path):
    api = make_api()
    c = client_for(api)
    with pytest.raises(errors.BadRequestError) as info:
        c.remix("gen_doesnotexist", "anything")
    assert info.value.param == "remix_target_id"
    with pytest.raises(errors.BadRequestError):
        c.remix("s_" + "0" * 32, "anything")
    source = source_video(c, tmp_path, n_frames=5)
    with pytest.raises(errors.BadRequestError):  # bob cannot remix alice's draft
        client_for(api, user="bob").remix(source.draft["id"], "not mine")
    with pytest.raises(errors.BadRequestError) as info:
        c.remix(source.draft["id"], "too strong", strength=1.5)
    assert info.value.param == "remix_strength"
    assert task_count(api) == 1


# -- extend ------------------------------------------------------------------------------------
def test_extend_makes_one_longer_video(make_api, tmp_path):
    api = make_api()
    c = client_for(api)
    source = source_video(c, tmp_path, n_frames=30)
    created = c.extend(source.draft["id"], 1.5)
    assert created["operation"] == "extend"
    task = c.wait(created["id"])
    assert task["prompt"] == "a red kite over a grey sea"  # an empty prompt continues the source's
    result = c.download_task(task, str(tmp_path / "longer.mp4"))
    before, after = probe(source.path), probe(result.path)
    assert after.n_frames == 30 + 45 and after.duration_s == pytest.approx(before.duration_s + 1.5, abs=0.05)
    assert (after.width, after.height) == (before.width, before.height)

    guided = c.wait(c.extend(result.draft["id"], 1, "the kite lands on the beach")["id"])
    assert guided["prompt"] == "the kite lands on the beach"
    assert probe(c.download_task(guided, str(tmp_path / "even-longer.mp4")).path).n_frames == 75 + 30


def test_extend_refuses_bad_input(make_api):
    api = make_api()
    c = client_for(api)
    for bad in (0, -2, "10", None):
        with pytest.raises(ValueError, match="seconds"):
            c.extend("gen_anything", bad)
    with pytest.raises(errors.NotFoundError):
        c.extend("gen_doesnotexist", 2)
    assert task_count(api) == 0


# -- storyboard --------------------------------------------------------------------------------
def test_storyboard_lasts_the_sum_of_its_shots(make_api, wrapped, tmp_path):
    api = make_api()
    rec = Recorder(api.app)
    c = client_for(api, wrapped(rec))
    shots = [("a cat walks into a kitchen", 0.5), {"prompt": "the cat jumps on the table", "seconds": 1},
             ("a close-up of the cat", 0.25)]
    created = c.storyboard(shots, instructions="soft light", orientation="landscape")
    assert rec.posts_to(r"^/backend/nf/create/storyboard$") == 1 and created["operation"] == "storyboard"
    task = c.wait(created["id"])
    result = c.download_task(task, str(tmp_path / "board.mp4"))
    info = probe(result.path)
    assert info.n_frames == 15 + 30 + 8 and info.duration_s == pytest.approx(1.75, abs=0.05)
    assert (info.width, info.height) == (640, 352)
    assert [s["prompt"] for s in result.draft["creation_config"]["shots"]] == [
        "a cat walks into a kitchen", "the cat jumps on the table", "a close-up of the cat"]


def test_storyboard_body_carries_shots_and_the_web_text_form():
    body = Core.storyboard_body([("one", 5), ("two", 2.25)], instructions="calm")
    assert body["shots"] == [{"prompt": "one", "duration_s": 5.0}, {"prompt": "two", "duration_s": 2.25}]
    assert body["prompt"] == ("current timeline:\nShot 1:\nduration: 5.0sec\nScene: one\n\n"
                              "Shot 2:\nduration: 2.25sec\nScene: two\n\ninstructions:\ncalm")
    assert body["n_frames"] == round(7.25 * 30) and body["instructions"] == "calm"
    assert timeline_text(storyboard_shots([("a", 1)])) == "current timeline:\nShot 1:\nduration: 1.0sec\nScene: a"


def test_bad_shots_are_refused_naming_the_shot_before_anything_is_sent(make_api):
    api = make_api()
    c = client_for(api)
    cases = [([("fine", 1), ("", 2)], "shot 2: the prompt"), ([("fine", 1), ("no time", 0)], "shot 2: seconds"),
             ([("fine", 1), ("a", 1), ("x",)], "shot 3"), ([], "at least one shot"),
             ([{"prompt": "a"}], "shot 1: seconds"), ("5s: a cat", "list")]
    for shots, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            c.storyboard(shots)
    assert task_count(api) == 0


# -- share -------------------------------------------------------------------------------------
def test_share_gives_a_public_permalink_until_unshared(make_api, tmp_path):
    api = make_api()
    c = client_for(api)
    source = source_video(c, tmp_path, n_frames=5)
    post = c.share(source.draft["id"], "my kite")
    assert re.fullmatch(r"s_[0-9a-f]{32}", post["id"]) and post["attachments"][0]["id"] == source.draft["id"]
    page = api.client.get(post["permalink"])  # no credentials
    assert page.status_code == 200 and "my kite" in page.text
    assert client_for(api, user="bob").post(post["id"])["id"] == post["id"]  # posts are public
    with pytest.raises(errors.NotFoundError):
        client_for(api, user="bob").unshare(post["id"])  # but only the poster takes one down
    c.unshare(post["id"])
    assert api.client.get(post["permalink"]).status_code == 404
    with pytest.raises(errors.NotFoundError):
        c.post(post["id"])
    with pytest.raises((errors.BadRequestError, errors.NotFoundError)):
        c.share("gen_doesnotexist")


# -- async: the same verbs ---------------------------------------------------------------------
def test_async_client_has_the_same_verbs(make_api, tmp_path):
    api = make_api()

    async def main():
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(api.app), base_url=BASE) as http:
            c = AsyncSoraClient(BASE, token_of(api.alice), http_client=http, **FAST)
            source = await c.generate("an async kite", n_frames=10, variants=2, output=str(tmp_path / "a.mp4"))
            gen_id = source.draft["id"]
            remixed, extended, board = await asyncio.gather(
                c.remix(gen_id, "an async remix", strength=0.3), c.extend(gen_id, 0.5),
                c.storyboard([("one", 0.5), ("two", 0.5)]))
            tasks = await asyncio.gather(*(c.wait(t["id"]) for t in (remixed, extended, board)))
            files = [await c.download_task(t, str(tmp_path / f"{name}.mp4"))
                     for t, name in zip(tasks, ("remix", "extend", "board"))]
            post = await c.share(gen_id, "async")
            seen = await c.post(post["id"])
            await c.unshare(post["id"])
            return source, files, post, seen

    source, (remix, extend, board), post, seen = asyncio.run(main())
    assert [p.name for p in source.paths] == ["a-1.mp4", "a-2.mp4"] and sha(source.paths[0]) != sha(source.paths[1])
    assert probe(remix.path).n_frames == 10 and probe(extend.path).n_frames == 25
    assert probe(board.path).n_frames == 30
    assert seen["id"] == post["id"] and api.client.get(post["permalink"]).status_code == 404
