"""Remix, extend, storyboard and variations on /backend, through the preview engine, checked on
the decoded MP4s (PROTOCOL section 2's related endpoints)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from conftest import Api, assert_error
from PIL import Image
from serverproc import ServerProcess

from sorakit.engines import Engine
from sorakit.engines.preview import PreviewEngine
from sorakit.media.encode import decode_frames, probe
from sorakit.media.frames import resize
from sorakit.server.operations import parse_timeline


def _video(api, gen: dict):
    path = api.settings.media_dir / gen["id"] / "video.mp4"
    return probe(path), [f.astype(np.int16) for f in decode_frames(path)]


def _finished(api, task_id: str) -> dict:
    task = api.wait(task_id)
    assert task["status"] == "succeeded", task
    return task


def _source(api, **body) -> dict:
    body = {"prompt": "a red lighthouse on a cliff", "n_frames": 30, "orientation": "landscape", "seed": 1, **body}
    return _finished(api, api.create(**body).json()["id"])["generations"][0]


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _post(api, path: str, body: dict, headers=None):
    return api.client.post(path, json=body, headers=headers or api.alice)


# -- remix ------------------------------------------------------------------------------------
def test_a_remix_is_a_new_video_visibly_made_from_its_source(make_api):
    api = make_api(default_concurrency=5)
    source = _source(api)
    r = api.create(prompt="the same lighthouse at night, snowing", remix_target_id=source["id"], seed=3)
    assert r.status_code == 200 and r.json()["operation"] == "remix"
    task = _finished(api, r.json()["id"])
    assert task["operation"] == "remix" and len(task["generations"]) == 1
    remix = task["generations"][0]
    assert remix["generation_type"] == "remix" and remix["source_generation_id"] == source["id"]
    assert remix["creation_config"]["source_generation_id"] == source["id"]
    assert remix["remix_target_post"] is None
    # the source's own shape and length carry over when the remix names none
    assert (remix["width"], remix["height"], remix["n_frames"]) == (source["width"], source["height"], 30)
    plain = _finished(api, api.create(prompt="the same lighthouse at night, snowing", n_frames=30, seed=3,
                                      orientation="landscape").json()["id"])["generations"][0]
    _, src = _video(api, source)
    _, mixed = _video(api, remix)
    _, fresh = _video(api, plain)
    to_remix = np.mean([_diff(a, b) for a, b in zip(src, mixed)])
    to_fresh = np.mean([_diff(a, b) for a, b in zip(src, fresh)])
    assert to_remix < 0.6 * to_fresh, (to_remix, to_fresh)


def test_remix_strength_sets_how_much_of_the_source_stays(make_api):
    api = make_api(default_concurrency=5)
    source = _source(api)
    _, src = _video(api, source)
    distance = {}
    for strength in (0.2, 0.9):
        task = _finished(api, api.create(prompt="blue", remix_target_id=source["id"],
                                         remix_strength=strength).json()["id"])
        assert task["generations"][0]["creation_config"]["remix_strength"] == strength
        _, frames = _video(api, task["generations"][0])
        distance[strength] = np.mean([_diff(a, b) for a, b in zip(src, frames)])
    assert distance[0.2] < distance[0.9] / 2, distance
    r = api.create(prompt="x", remix_target_id=source["id"], remix_strength=1.5)
    assert_error(r, 400, "invalid_request", "remix_strength")


def test_remix_targets_must_be_finished_videos_of_the_caller(make_api):
    api = make_api(default_concurrency=5, blocked_terms=["forbidden"])
    source = _source(api)
    assert_error(api.create(prompt="x", remix_target_id=source["id"], headers=api.bob), 400, "invalid_request",
                 "remix_target_id")
    for target in ("gen_nope", "task_x", "s_" + "0" * 32):
        assert_error(api.create(prompt="x", remix_target_id=target), 400, "invalid_request", "remix_target_id")
    refused = api.wait(api.create(prompt="forbidden thing", n_frames=5).json()["id"])
    assert_error(api.create(prompt="x", remix_target_id=refused["generations"][0]["id"]), 400,
                 "invalid_request", "remix_target_id")
    # moderation reads the remix's own prompt
    task = api.wait(api.create(prompt="a forbidden remix", remix_target_id=source["id"]).json()["id"])
    assert task["status"] == "failed" and task["generations"][0]["kind"] == "sora_content_violation"


# -- extend -----------------------------------------------------------------------------------
def test_an_extension_is_one_longer_video_that_starts_with_the_source(make_api):
    api = make_api(default_concurrency=5)
    source = _source(api)
    path = f"/backend/project_y/profile/drafts/{source['id']}/long_video_extension"
    r = _post(api, path, {"user_prompt": "the storm arrives", "extension_duration_s": 1.5, "enable_rewrite": False})
    assert r.status_code == 200, r.text
    assert r.json()["id"].startswith("task_") and r.json()["operation"] == "extend"
    task = _finished(api, r.json()["id"])
    longer = task["generations"][0]
    assert longer["generation_type"] == "extension" and longer["source_generation_id"] == source["id"]
    info, frames = _video(api, longer)
    _, src = _video(api, source)
    assert info.n_frames == 30 + 45 == longer["n_frames"] and info.duration_s == pytest.approx(2.5, abs=0.05)
    # the first frames are the source's (re-encoded: equal up to the codec's rounding)
    assert max(_diff(a, b) for a, b in zip(src, frames[:30])) < 3.0
    # no seam: the step into the extension is no bigger than the source's own frame steps
    steps = [_diff(frames[i], frames[i + 1]) for i in range(29)]
    assert _diff(frames[29], frames[30]) <= 2 * max(steps) + 1.0, (_diff(frames[29], frames[30]), max(steps))
    # and then it becomes the new scene
    assert _diff(frames[29], frames[-1]) > 10


def test_extension_refusals(make_api):
    api = make_api(default_concurrency=5, blocked_terms=["forbidden"])
    source = _source(api)
    path = f"/backend/project_y/profile/drafts/{source['id']}/long_video_extension"
    assert_error(_post(api, path, {"extension_duration_s": 0}), 400, "invalid_request")
    assert_error(_post(api, path, {"extension_duration_s": 60}), 400, "invalid_request", "extension_duration_s")
    assert_error(_post(api, path, {"extension_duration_s": 5}, api.bob), 404, "not_found")
    assert_error(_post(api, "/backend/project_y/profile/drafts/gen_nope/long_video_extension",
                       {"extension_duration_s": 5}), 404, "not_found")
    task = api.wait(_post(api, path, {"user_prompt": "forbidden", "extension_duration_s": 1}).json()["id"])
    assert task["status"] == "failed" and task["generations"][0]["kind"] == "sora_content_violation"
    # an empty prompt continues the source's own
    task = _finished(api, _post(api, path, {"user_prompt": "", "extension_duration_s": 0.5}).json()["id"])
    assert task["prompt"] == "a red lighthouse on a cliff"


class TextOnly(Engine):
    """An engine that can only do text-to-video."""

    name = "textonly"

    def frames(self, job, ctx) -> Iterator[np.ndarray]:
        for _ in range(job.n_frames):
            yield np.zeros((job.height, job.width, 3), np.uint8)


def test_an_engine_that_cannot_remix_or_extend_says_so(make_api):
    api = make_api(default_concurrency=5, engines={"preview": PreviewEngine(), "textonly": TextOnly()})
    source = _source(api, model="textonly")
    err = assert_error(api.create(prompt="x", remix_target_id=source["id"]), 400, "invalid_request",
                       "remix_target_id")
    assert "textonly" in err["message"] and "remix" in err["message"]
    path = f"/backend/project_y/profile/drafts/{source['id']}/long_video_extension"
    err = assert_error(_post(api, path, {"extension_duration_s": 1}), 400, "invalid_request")
    assert "textonly" in err["message"] and "extension" in err["message"]
    # another model that can: named explicitly
    task = _finished(api, api.create(prompt="x", remix_target_id=source["id"], model="preview").json()["id"])
    assert task["model"] == "preview"


# -- storyboard -------------------------------------------------------------------------------
def test_a_storyboard_is_its_shots_in_order_joined_with_cuts(make_api):
    api = make_api(default_concurrency=5)
    shots = [{"prompt": "a sunrise over the sea", "duration_s": 1.0},
             {"prompt": "a busy market at noon", "duration_s": 0.5},
             {"prompt": "a quiet street at midnight", "duration_s": 1.0}]
    r = _post(api, "/backend/nf/create/storyboard", {"shots": shots, "orientation": "landscape"})
    assert r.status_code == 200, r.text
    task = _finished(api, r.json()["id"])
    draft = task["generations"][0]
    assert task["operation"] == "storyboard" and draft["generation_type"] == "storyboard"
    assert [s["n_frames"] for s in draft["creation_config"]["shots"]] == [30, 15, 30]
    info, frames = _video(api, draft)
    assert info.n_frames == 75 and info.duration_s == pytest.approx(2.5, abs=0.05)
    steps = [_diff(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    within = np.median(steps)
    for boundary in (29, 44):  # the last frame of shots 1 and 2
        assert steps[boundary] > 5 * within + 5, (boundary, steps[boundary], within)
    others = [s for i, s in enumerate(steps) if i not in (29, 44)]
    assert max(others) < min(steps[29], steps[44])


def test_the_web_apps_storyboard_text_is_understood(make_api):
    text = ("current timeline:\nShot 1:\nduration: 1.0sec\nScene: a cat wakes up\n\n"
            "Shot 2:\nduration: 0.5sec\nScene: the cat jumps\nonto the table\n\ninstructions:\nwarm light")
    shots, instructions = parse_timeline(text)
    assert shots == [{"prompt": "a cat wakes up", "seconds": 1.0},
                     {"prompt": "the cat jumps onto the table", "seconds": 0.5}]
    assert instructions == "warm light"
    api = make_api(default_concurrency=5, blocked_terms=["forbidden"])
    task = _finished(api, _post(api, "/backend/nf/create/storyboard", {"prompt": text}).json()["id"])
    assert probe(api.settings.media_dir / task["generations"][0]["id"] / "video.mp4").n_frames == 45
    bad = {"prompt": "Shot 1:\nScene: no duration"}
    assert_error(_post(api, "/backend/nf/create/storyboard", bad), 400, "invalid_request", "prompt")
    assert_error(_post(api, "/backend/nf/create/storyboard", {"prompt": "just a sentence"}), 400,
                 "invalid_request", "prompt")
    too_long = {"shots": [{"prompt": "x", "duration_s": 20}, {"prompt": "y", "duration_s": 20}]}
    assert_error(_post(api, "/backend/nf/create/storyboard", too_long), 400, "invalid_request", "shots")
    assert_error(_post(api, "/backend/nf/create/storyboard", {"shots": [{"prompt": "x"}]}), 400,
                 "invalid_request", "shots[0].duration_s")
    # moderation reads every shot
    blocked = {"shots": [{"prompt": "fine", "duration_s": 0.5}, {"prompt": "forbidden", "duration_s": 0.5}]}
    task = api.wait(_post(api, "/backend/nf/create/storyboard", blocked).json()["id"])
    assert task["status"] == "failed" and task["generations"][0]["kind"] == "sora_content_violation"


# -- variations -------------------------------------------------------------------------------
def test_variations_are_one_task_with_n_different_drafts_counted_as_n(make_api):
    api = make_api(default_concurrency=5, default_daily_limit=5)
    r = _post(api, "/backend/nf/bulk_create", {"prompt": "a kite over a beach", "n_frames": 10, "nsamples": 3})
    assert r.status_code == 200, r.text
    assert r.json()["rate_limit_and_credit_balance"]["estimated_num_videos_remaining"] == 2
    task = _finished(api, r.json()["id"])
    gens = task["generations"]
    assert task["n_variants"] == 3 and len(gens) == 3 and len({g["id"] for g in gens}) == 3
    assert [g["variant_index"] for g in gens] == [0, 1, 2]
    firsts = [_video(api, g)[1][5] for g in gens]
    assert min(_diff(firsts[i], firsts[j]) for i, j in ((0, 1), (0, 2), (1, 2))) > 5
    drafts = api.client.get("/backend/project_y/profile/drafts", headers=api.alice).json()["items"]
    assert {g["id"] for g in gens} <= {d["id"] for d in drafts}
    # 2 left: a request for 3 more is refused whole, naming what is left
    err = assert_error(api.create(prompt="more", nsamples=3), 429, "rate_limit_exhausted")
    assert "only 2" in err["message"]
    assert api.create(prompt="two more", nsamples=2, n_frames=5).status_code == 200


def test_image_to_video_follows_the_images_shape_when_no_orientation_is_named(api):
    buf = io.BytesIO()
    Image.new("RGB", (800, 450), (200, 40, 40)).save(buf, format="PNG")
    up = api.client.post("/backend/uploads", files={"file": ("wide.png", buf.getvalue(), "image/png")},
                         headers=api.alice).json()
    task = _finished(api, api.create(prompt="x", n_frames=5,
                                     inpaint_items=[{"kind": "upload", "upload_id": up["id"]}]).json()["id"])
    assert task["orientation"] == "landscape" and task["width"] > task["height"]
    task = _finished(api, api.create(prompt="x", n_frames=5, orientation="portrait",
                                     inpaint_items=[{"kind": "upload", "upload_id": up["id"]}]).json()["id"])
    assert task["width"] < task["height"]


# -- over real HTTP ---------------------------------------------------------------------------
def test_the_whole_chain_over_a_real_server(tmp_path):
    with ServerProcess(tmp_path / "data", env={"SORAKIT_DEFAULT_CONCURRENCY": "5"}) as server:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {server.token}"

        def run(path: str, body: dict) -> dict:
            r = s.post(server.url + path, json=body, timeout=10)
            assert r.status_code == 200, r.text
            task_id = r.json()["id"]
            for _ in range(400):
                task = s.get(f"{server.url}/backend/nf/tasks/{task_id}/v2", timeout=10).json()
                if task["status"] in ("succeeded", "failed"):
                    assert task["status"] == "succeeded", task
                    return task
                import time
                time.sleep(0.05)
            raise AssertionError(task)

        def download(gen: dict):
            data = requests.get(gen["url"], timeout=10).content  # a signed link, no credentials
            path = tmp_path / f"{gen['id']}.mp4"
            path.write_bytes(data)
            return probe(path)

        source = run("/backend/nf/create", {"prompt": "a paper boat", "n_frames": 30})["generations"][0]
        remix = run("/backend/nf/create", {"prompt": "a paper plane", "remix_target_id": source["id"]})
        assert download(remix["generations"][0]).n_frames == 30
        ext = run(f"/backend/project_y/profile/drafts/{source['id']}/long_video_extension",
                  {"user_prompt": "it sails away", "extension_duration_s": 1, "enable_rewrite": True})
        assert download(ext["generations"][0]).n_frames == 60
        board = run("/backend/nf/create/storyboard", {"shots": [{"prompt": "a", "duration_s": 0.5},
                                                                {"prompt": "b", "duration_s": 0.5}]})
        assert download(board["generations"][0]).n_frames == 30
        variants = run("/backend/nf/create", {"prompt": "a kite", "n_frames": 10, "nsamples": 2})
        assert [download(g).n_frames for g in variants["generations"]] == [10, 10]


def test_frames_are_resized_without_distortion():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, 50:150] = 255  # a centred white square band
    out = resize(frame, 100, 100)
    assert out.shape == (100, 100, 3) and out.mean() > 250


def test_a_source_deleted_before_its_remix_runs_fails_the_remix_cleanly(make_api):
    api = make_api(default_concurrency=5, preview_pace=0.5)
    source = _source(api, n_frames=5)
    blocker = api.create(prompt="runs first", n_frames=5).json()["id"]  # the one worker is busy with it
    remix = api.create(prompt="too late", remix_target_id=source["id"]).json()["id"]
    r = api.client.delete(f"/backend/project_y/profile/drafts/{source['id']}", headers=api.alice)
    assert r.status_code == 200
    assert api.wait(blocker)["status"] == "succeeded"
    task = api.wait(remix)
    assert task["status"] == "failed" and "deleted" in task["failure_reason"]
    assert task["generations"][0]["error_reason"] == "source_missing"
    assert not list((api.settings.media_dir / "tmp").glob("*"))


@pytest.mark.sqlite_only
def test_migrating_from_0006_keeps_old_tasks_and_drafts_working(make_api):
    """A database from before 0007: its tasks have no operation columns and no posts table."""
    from sqlalchemy import inspect

    from sorakit.store.db import sqlite_engine
    from sorakit.store.migrations import migrate

    api = make_api(default_concurrency=5)
    old = _source(api)
    db = api.settings.data_dir / "sorakit.db"
    api.close()
    engine = sqlite_engine(db)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE posts")
        for column in ("operation", "inputs", "n_variants"):
            conn.exec_driver_sql(f"ALTER TABLE tasks DROP COLUMN {column}")
        conn.exec_driver_sql("DELETE FROM schema_migrations WHERE name >= '0007'")
    assert migrate(engine)[0] == "0007_operations_and_posts"
    assert "posts" in inspect(engine).get_table_names()
    api = Api(db.parent, 1, None, default_concurrency=5)
    try:
        task = api.task(old["task_id"])
        assert task["operation"] == "generate" and task["n_variants"] == 1
        r = api.create(prompt="built on an old draft", remix_target_id=old["id"])
        assert _finished(api, r.json()["id"])["generations"][0]["source_generation_id"] == old["id"]
    finally:
        api.close()


class ShortClips(PreviewEngine):
    """A preview engine whose model makes at most 1 s at a time (like a diffusers family's cap)."""

    name = "short"

    def plan(self, orientation, size, n_frames, image=False):
        return super().plan(orientation, size, min(n_frames, 30), image)


def test_extensions_stay_within_what_the_engine_and_the_server_make(make_api):
    api = make_api(default_concurrency=5, max_frames=90,
                   engines={"preview": PreviewEngine(), "short": ShortClips()})
    source = _source(api, model="short")
    path = f"/backend/project_y/profile/drafts/{source['id']}/long_video_extension"
    err = assert_error(_post(api, path, {"extension_duration_s": 1.5}), 400, "invalid_request",
                       "extension_duration_s")
    assert "at most 1 s at a time" in err["message"]
    # chained extensions end at max_frames (3 s here): 1 s + 1 s + 1 s, then no more
    current = source
    for _ in range(2):
        task = _finished(api, _post(api, f"/backend/project_y/profile/drafts/{current['id']}/long_video_extension",
                                    {"extension_duration_s": 1}).json()["id"])
        current = task["generations"][0]
    assert current["n_frames"] == 90
    err = assert_error(_post(api, f"/backend/project_y/profile/drafts/{current['id']}/long_video_extension",
                             {"extension_duration_s": 1}), 400, "invalid_request", "extension_duration_s")
    assert "cannot be extended" in err["message"]


def test_an_idempotency_key_names_one_extension_of_one_draft(make_api):
    api = make_api(default_concurrency=5)
    first, second = _source(api), _source(api, prompt="another")
    key = {**api.alice, "Idempotency-Key": "ext-1"}
    body = {"user_prompt": "on", "extension_duration_s": 0.5}
    one = api.client.post(f"/backend/project_y/profile/drafts/{first['id']}/long_video_extension", json=body,
                          headers=key)
    again = api.client.post(f"/backend/project_y/profile/drafts/{first['id']}/long_video_extension", json=body,
                            headers=key)
    assert one.status_code == again.status_code == 200 and one.json()["id"] == again.json()["id"]
    other = api.client.post(f"/backend/project_y/profile/drafts/{second['id']}/long_video_extension", json=body,
                            headers=key)
    assert_error(other, 409, "idempotency_key_conflict")


def test_variations_beyond_the_daily_limit_are_a_400_not_a_wait(make_api):
    api = make_api(default_concurrency=5, default_daily_limit=3, max_variants=4)
    err = assert_error(api.create(prompt="x", nsamples=4), 400, "invalid_request", "nsamples")
    assert "limit is 3 a day" in err["message"]


def test_a_shared_post_shows_others_only_its_picture_with_short_links(make_api):
    import time as clock
    from urllib.parse import parse_qs, urlparse

    api = make_api(default_concurrency=5)
    gen = _source(api)
    post = _post(api, "/backend/project_y/post", {"attachments_to_create": [{"generation_id": gen["id"],
                                                                             "kind": "sora"}],
                                                   "post_text": "mine"}).json()["post"]
    seen = api.client.get(f"/backend/project_y/post/{post['id']}", headers=api.bob).json()["post"]
    public = seen["attachments"][0]
    assert not {"prompt", "task_id", "creation_config", "engine"} & set(public)
    from datetime import datetime

    expiry = datetime.fromisoformat(parse_qs(urlparse(public["url"]).query)["se"][0].replace("Z", "+00:00"))
    assert expiry.timestamp() <= clock.time() + 3600 + 5
    assert api.client.get(public["url"]).status_code == 200
    own = api.client.get(f"/backend/project_y/post/{post['id']}", headers=api.alice).json()["post"]
    assert own["attachments"][0]["prompt"] == "a red lighthouse on a cliff"


def test_an_uploaded_video_is_not_an_image(make_api, tmp_path):
    from sorakit.media.encode import encode_mp4

    api = make_api(default_concurrency=5)
    clip = tmp_path / "c.mp4"
    encode_mp4([np.zeros((64, 64, 3), np.uint8)] * 5, clip, width=64, height=64, fps=5)
    upload = api.services.store  # a video upload, as /v1/videos/edits keeps it
    from starlette.datastructures import UploadFile

    from sorakit.server.uploads import save_video
    with clip.open("rb") as f:
        row = save_video(api.services, upload.user_by_name("alice")["id"], UploadFile(f, filename="c.mp4"))
    r = api.create(prompt="x", inpaint_items=[{"kind": "upload", "upload_id": row["id"]}])
    assert "video" in assert_error(r, 400, "invalid_request", "inpaint_items")["message"]
