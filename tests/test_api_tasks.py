"""POST /backend/nf/create, pending, tasks/{id}/v2 and cancel, against the real app in-process."""

from __future__ import annotations

import json
import time

import pytest
from conftest import DOCUMENTED_DRAFT_KEYS, DOCUMENTED_TASK_KEYS, assert_error

from sorakit.engines import EngineError
from sorakit.engines.preview import PreviewEngine
from sorakit.media.encode import probe

SEED_BODY = {
    "kind": "video", "prompt": "A cinematic drone shot of a futuristic city at sunset...", "title": None,
    "orientation": "portrait", "size": "small", "audio_caption": None, "audio_transcript": None,
    "cameo_ids": None, "cameo_replacements": None, "inpaint_items": [], "metadata": None,
    "model": "sy_8", "n_frames": 30, "project_id": None, "remix_target_id": None,
    "storyboard_id": None, "style_id": None, "video_caption": None,
}


def test_create_answers_the_union_of_seed_and_live_shapes(api):
    r = api.create(**SEED_BODY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("task_") and len(body["id"]) == 5 + 26
    assert body["id"][5:] == body["id"][5:].lower()
    assert body["status"] == "pending" and body["prompt"] == SEED_BODY["prompt"]
    assert body["task_type"] == "video_gen" and isinstance(body["priority"], int)
    balance = body["rate_limit_and_credit_balance"]
    assert set(balance) == {"estimated_num_videos_remaining", "estimated_num_purchased_videos_remaining",
                            "credit_remaining", "rate_limit_reached", "access_resets_in_seconds"}
    assert balance["estimated_num_videos_remaining"] == api.settings.default_daily_limit - 1


def test_unknown_keys_are_kept_with_the_task(api):
    r = api.create(prompt="keep me", n_frames=2, future_field={"a": 1}, project_config=None)
    row = api.services.store.task(r.json()["id"])
    assert row["request"]["future_field"] == {"a": 1}
    assert "project_config" in row["request"]


@pytest.mark.parametrize("orientation,size,expected", [
    ("portrait", "small", (352, 640)), ("landscape", "small", (640, 352)), ("square", "small", (480, 480)),
    ("portrait", "large", (720, 1280)), ("landscape", "large", (1280, 720)), ("square", "large", (960, 960)),
])
def test_orientation_and_size_map_to_resolutions(make_api, orientation, size, expected):
    api = make_api(workers=0)
    task_id = api.create(orientation=orientation, size=size, n_frames=1).json()["id"]
    task = api.task(task_id)
    assert (task["width"], task["height"]) == expected


@pytest.mark.parametrize("body,param", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 10_001}, "prompt"),
    ({"prompt": "ok", "orientation": "diagonal"}, "orientation"),
    ({"prompt": "ok", "size": "huge"}, "size"),
    ({"prompt": "ok", "n_frames": 0}, "n_frames"),
    ({"prompt": "ok", "n_frames": 751}, "n_frames"),
    ({"prompt": "ok", "n_frames": "many"}, "n_frames"),
    ({"prompt": "ok", "model": "gpt-video"}, "model"),
    ({"prompt": "ok", "kind": "image"}, "kind"),
    ({"prompt": "ok", "inpaint_items": [{"kind": "upload", "upload_id": "media_x"}]}, "inpaint_items"),
    ({"prompt": "ok", "remix_target_id": "gen_abc"}, "remix_target_id"),
    ({"prompt": "ok", "nsamples": 99}, "nsamples"),
    ({"prompt": "ok", "nsamples": "two"}, "nsamples"),
    ({"n_frames": 10}, "prompt"),
    ({"prompt": "ok", "num_inference_steps": "abc"}, "num_inference_steps"),
    ({"prompt": "ok", "num_inference_steps": 0}, "num_inference_steps"),
    ({"prompt": "ok", "guidance_scale": -1}, "guidance_scale"),
    ({"prompt": 12}, "prompt"),
])
def test_bad_create_bodies_are_400_naming_the_field(api, body, param):
    r = api.client.post("/backend/nf/create", json=body, headers=api.alice)
    error = assert_error(r, 400, "invalid_request", param)
    assert error["message"]


def test_malformed_json_and_non_object_bodies_are_400(api):
    headers = {**api.alice, "Content-Type": "application/json"}
    assert_error(api.client.post("/backend/nf/create", content=b'{"prompt": ', headers=headers),
                 400, "invalid_request")
    assert_error(api.client.post("/backend/nf/create", content=b'[1, 2]', headers=headers),
                 400, "invalid_request")


@pytest.mark.parametrize("model", ["sy_8", "sy_ore", "sy_8_20251208", None])
def test_accepted_model_ids(make_api, model):
    api = make_api(workers=0)
    r = api.create(model=model, n_frames=1)
    assert r.status_code == 200, r.text
    assert api.task(r.json()["id"])["model"] == (model or "sy_8")


def test_configured_model_name_maps_to_its_engine(make_api):
    api = make_api(workers=0, models={"house-style": "preview"})
    assert api.create(model="house-style", n_frames=1).status_code == 200
    assert api.services.store.task(api.create(model="house-style", n_frames=1).json()["id"])["engine"] == "preview"


def test_n_frames_maximum_is_configurable(make_api):
    api = make_api(workers=0, max_frames=20)
    assert api.create(n_frames=20).status_code == 200
    assert_error(api.create(n_frames=21), 400, "invalid_request", "n_frames")


def test_status_walk_and_documented_keys(make_api):
    api = make_api(workers=0, preview_pace=1.5)
    task_id = api.create(n_frames=30).json()["id"]
    queued = api.client.get("/backend/nf/pending/v2", headers=api.alice).json()
    assert [t["id"] for t in queued] == [task_id]
    assert set(queued[0]) >= DOCUMENTED_TASK_KEYS
    assert queued[0]["status"] == "queued" and queued[0]["progress_pct"] is None
    assert queued[0]["progress_pos_in_queue"] == 1 and queued[0]["estimated_queue_wait_time"] >= 0

    from sorakit.worker import WorkerPool  # start a worker only now, to see the queued state first
    pool = WorkerPool(api.services, 1)
    pool.start()
    try:
        seen = _watch(api, task_id)
    finally:
        pool.stop()
    assert seen[0] == "queued" and seen[-1] == "succeeded"
    assert "running" in seen
    assert all(seen.index(a) <= seen.index(b) for a, b in zip(seen, seen[1:]))


def _watch(api, task_id) -> list[str]:
    seen, fractions = ["queued"], []
    while seen[-1] not in ("succeeded", "failed"):
        task = api.task(task_id)
        if task["status"] != seen[-1]:
            seen.append(task["status"])
        if task["status"] == "running":
            fractions.append(task["progress_pct"])
        time.sleep(0.05)
    assert fractions and all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions), "progress went backwards"
    assert max(fractions) > 0.0
    return seen


def test_finished_task_carries_generation_with_all_url_keys(api):
    task_id = api.create(n_frames=12).json()["id"]
    task = api.wait(task_id)
    assert task["status"] == "succeeded" and task["progress_pct"] == 1.0
    listed = api.client.get("/backend/nf/pending/v2", headers=api.alice).json()
    gen = listed[0]["generations"][0]
    assert set(gen) >= DOCUMENTED_DRAFT_KEYS
    assert gen["url"] and gen["url"] == gen["video_url"] == gen["download_url"]
    assert gen["kind"] == "sora_draft" and gen["engine"]["placeholder"] is True
    video = api.client.get(gen["url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"


def test_finished_window_zero_drops_finished_tasks_like_the_live_service(make_api):
    api = make_api(finished_window_seconds=0)
    task_id = api.create(n_frames=3).json()["id"]
    api.wait(task_id)
    assert api.client.get("/backend/nf/pending/v2", headers=api.alice).json() == []
    assert api.task(task_id)["status"] == "succeeded"  # still reachable by id


def test_pending_v1_is_the_same_list(api):
    task_id = api.create(n_frames=2).json()["id"]
    v1 = api.client.get("/backend/nf/pending", headers=api.alice).json()
    assert [t["id"] for t in v1] == [task_id]


def test_queue_positions_follow_creation_order(make_api):
    api = make_api(workers=0, default_concurrency=5)
    ids = [api.create(n_frames=1).json()["id"] for _ in range(3)]
    listed = {t["id"]: t for t in api.client.get("/backend/nf/pending/v2", headers=api.alice).json()}
    assert [listed[i]["progress_pos_in_queue"] for i in ids] == [1, 2, 3]
    waits = [listed[i]["estimated_queue_wait_time"] for i in ids]
    assert waits == sorted(waits)


def test_cancel_a_queued_task_at_once(make_api):
    api = make_api(workers=0)
    task_id = api.create(n_frames=5).json()["id"]
    r = api.client.post(f"/backend/nf/tasks/{task_id}/cancel", headers=api.alice)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["failure_reason"] == "task_cancelled"


def test_cancel_a_running_task_within_a_second(make_api):
    api = make_api(preview_pace=20)
    task_id = api.create(n_frames=60).json()["id"]
    api.wait(task_id, statuses=("running",))
    started = time.monotonic()
    api.client.post(f"/backend/nf/tasks/{task_id}/cancel", headers=api.alice)
    task = api.wait(task_id, timeout=5)
    assert task["status"] == "cancelled" and task["failure_reason"] == "task_cancelled"
    assert time.monotonic() - started < 1.0
    assert task["generations"] == []
    assert not list((api.settings.media_dir).glob("gen_*"))


class ExplodingEngine(PreviewEngine):
    name = "exploding"

    def frames(self, job, ctx):
        yield from super().frames(job, ctx)
        raise RuntimeError("the GPU caught fire")


class RefusingEngine(PreviewEngine):
    name = "refusing"

    def frames(self, job, ctx):
        raise EngineError("This model cannot draw hands.", code="model_refused")


def test_engine_failures_fail_only_their_task(make_api):
    engines = {"preview": PreviewEngine(), "exploding": ExplodingEngine(), "refusing": RefusingEngine()}
    api = make_api(engines=engines, models={"boom": "exploding", "nope": "refusing"}, default_concurrency=5)
    boom = api.create(model="boom", n_frames=3).json()["id"]
    nope = api.create(model="nope", n_frames=3).json()["id"]
    fine = api.create(n_frames=3).json()["id"]
    for task_id, reason in ((boom, "the GPU caught fire"), (nope, "This model cannot draw hands.")):
        task = api.wait(task_id)
        assert task["status"] == "failed" and reason in task["failure_reason"]
        draft = task["generations"][0]
        assert draft["kind"] == "sora_error" and reason in draft["reason_str"] and draft["error_reason"]
        assert draft["url"] is None
    assert api.wait(fine)["status"] == "succeeded"
    assert api.client.get("/healthz").status_code == 200


def test_moderation_fails_with_a_readable_violation_draft(make_api):
    api = make_api(blocked_terms=["volcano", "red kite"])
    task_id = api.create(prompt="A Volcano at dawn").json()["id"]
    task = api.task(task_id)
    assert task["status"] == "failed"
    draft = task["generations"][0]
    assert draft["kind"] == "sora_content_violation" and draft["url"] is None
    assert "Volcano" in draft["reason_str"] and "**" in draft["markdown_reason_str"]
    assert api.create(prompt="volcanoes are fine as another word", n_frames=1).json()["status"] == "pending"


def test_tasks_v2_unknown_id_is_404_envelope(api):
    assert_error(api.client.get("/backend/nf/tasks/task_nope/v2", headers=api.alice), 404, "not_found")
    assert_error(api.client.post("/backend/nf/tasks/task_nope/cancel", headers=api.alice), 404, "not_found")


def test_unknown_route_and_wrong_method_use_the_envelope(api):
    assert_error(api.client.get("/backend/nope", headers=api.alice), 404, "not_found")
    assert_error(api.client.delete("/backend/nf/create", headers=api.alice), 405, "method_not_allowed")


def test_unexpected_errors_are_a_500_envelope_without_traceback(api):
    def broken():
        raise ZeroDivisionError("secret internals")

    api.app.add_api_route("/backend/broken", broken)
    r = api.client.get("/backend/broken")
    error = assert_error(r, 500, "internal_error")
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert error["type"] == "server_error"


def test_browser_headers_are_accepted(api):
    headers = {**api.alice, "Cookie": "oai-did=abc; _cfuvid=x", "oai-device-id": "6f1c0c1e-0000-4000-8000-000000000000",
               "openai-sentinel-token": json.dumps({"p": "x"}), "oai-language": "en-US",
               "User-Agent": "Mozilla/5.0", "Origin": "https://sora.chatgpt.com",
               "Referer": "https://sora.chatgpt.com/profile", "Priority": "u=1, i"}
    assert api.create(headers=headers, n_frames=1).status_code == 200


def test_video_has_the_requested_frames_and_size(api, tmp_path):
    task = api.wait(api.create(n_frames=45, orientation="landscape").json()["id"])
    path = tmp_path / "v.mp4"
    path.write_bytes(api.client.get(task["generations"][0]["url"]).content)
    info = probe(path)
    assert (info.width, info.height, info.n_frames) == (640, 352, 45)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and round(info.fps) == 30


@pytest.mark.parametrize("body,param", [
    ({"prompt": "ok", "seed": 10**24}, "seed"),
    ({"prompt": "ok", "seed": -1}, "seed"),
    ({"prompt": "x \ud800 y"}, "prompt"),
    ({"prompt": "ok", "title": "\ud800"}, "title"),
    ({"prompt": "ok", "style_id": "\udfff"}, "style_id"),
    ({"prompt": "ok", "n_frames": True}, "n_frames"),
])
def test_values_no_database_can_hold_are_400_not_500(api, body, param):
    raw = json.dumps(body).encode()  # json.dumps escapes the lone surrogates as \ud800
    r = api.client.post("/backend/nf/create", content=raw,
                        headers={**api.alice, "Content-Type": "application/json"})
    assert_error(r, 400, "invalid_request", param)


def test_body_that_is_not_utf8_is_invalid_request(api):
    r = api.client.post("/backend/nf/create", content=b'{"prompt": "\xff"}',
                        headers={**api.alice, "Content-Type": "application/json"})
    assert_error(r, 400, "invalid_request")


def test_idempotency_key_length_is_bounded(api):
    assert_error(api.create(headers={**api.alice, "Idempotency-Key": "k" * 256}), 400, "invalid_request",
                 "Idempotency-Key")
