"""GET /backend/nf/check and the limits: concurrency, rolling daily, global queue, idempotency."""

from __future__ import annotations

import threading

from conftest import assert_error


def test_check_shape(api):
    body = api.client.get("/backend/nf/check", headers=api.alice).json()
    balance = body["rate_limit_and_credit_balance"]
    assert balance == {"estimated_num_videos_remaining": 100, "estimated_num_purchased_videos_remaining": 0,
                       "credit_remaining": 100, "rate_limit_reached": False, "access_resets_in_seconds": 0}


def test_concurrency_cap_is_429_with_retry_after(make_api):
    api = make_api(workers=0, default_concurrency=2)
    for _ in range(2):
        assert api.create(n_frames=1).status_code == 200
    r = api.create(n_frames=1)
    error = assert_error(r, 429, "too_many_concurrent_tasks")
    assert error["message"].startswith("You already have 2 generations in progress")
    assert int(r.headers["Retry-After"]) >= 1
    assert api.create(headers=api.bob, n_frames=1).status_code == 200  # per user


def test_per_user_overrides(make_api):
    api = make_api(workers=0)
    roomy = api.headers_for("carol", concurrency=4, daily=5)
    assert all(api.create(headers=roomy, n_frames=1).status_code == 200 for _ in range(4))
    assert_error(api.create(headers=roomy, n_frames=1), 429, "too_many_concurrent_tasks")
    body = api.client.get("/backend/nf/check", headers=roomy).json()
    assert body["rate_limit_and_credit_balance"]["estimated_num_videos_remaining"] == 1
    assert body["concurrency_limit"] == 4 and body["tasks_in_progress"] == 4


def test_daily_limit_is_rolling_with_retry_after(make_api):
    api = make_api(default_daily_limit=2, default_concurrency=5)
    store = api.services.store
    real = store.clock
    start = real()
    store.clock = lambda: start - 3600  # the first video was made an hour ago
    api.wait(api.create(n_frames=1).json()["id"])
    store.clock = real
    api.wait(api.create(n_frames=1).json()["id"])
    r = api.create(n_frames=1)
    assert_error(r, 429, "rate_limit_exhausted")
    assert abs(int(r.headers["Retry-After"]) - (86400 - 3600)) < 5
    check = api.client.get("/backend/nf/check", headers=api.alice).json()["rate_limit_and_credit_balance"]
    assert check["rate_limit_reached"] is True and check["estimated_num_videos_remaining"] == 0
    store.clock = lambda: start + 86400 - 3600 + 10  # the first one aged out of the window
    assert api.create(n_frames=1).status_code == 200


def test_full_global_queue_is_503_heavy_load(make_api):
    api = make_api(workers=0, max_queue=2)
    api.create(n_frames=1)
    api.create(headers=api.bob, n_frames=1)
    r = api.create(headers=api.headers_for("carol"), n_frames=1)
    error = assert_error(r, 503, "server_overloaded")
    assert error["message"] == "We're under heavy load, please try again later."
    assert int(r.headers["Retry-After"]) > 0


def test_idempotency_key_replays_the_original_task(make_api):
    api = make_api(workers=0, default_concurrency=1)
    headers = {**api.alice, "Idempotency-Key": "k-1"}
    first = api.create(headers=headers, n_frames=3)
    again = api.create(headers=headers, n_frames=3)  # a replay is not refused by the cap of 1
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert len(api.client.get("/backend/nf/pending/v2", headers=api.alice).json()) == 1
    other_user = api.create(headers={**api.bob, "Idempotency-Key": "k-1"}, n_frames=3)
    assert other_user.json()["id"] != first.json()["id"]


def test_idempotency_key_with_another_body_is_409(make_api):
    api = make_api(workers=0)
    headers = {**api.alice, "Idempotency-Key": "k-2"}
    api.create(headers=headers, n_frames=3)
    assert_error(api.create(headers=headers, n_frames=4), 409, "idempotency_key_conflict")


def test_idempotency_window_is_24_hours(make_api):
    api = make_api(workers=0, default_concurrency=5)
    store, real = api.services.store, api.services.store.clock
    headers = {**api.alice, "Idempotency-Key": "k-3"}
    first = api.create(headers=headers, n_frames=3).json()["id"]
    store.clock = lambda: real() + 86400 + 60
    assert api.create(headers=headers, n_frames=3).json()["id"] != first


def test_concurrent_creates_cannot_exceed_the_cap(make_api):
    api = make_api(workers=0, default_concurrency=3)
    codes = []

    def post():
        codes.append(api.create(n_frames=1).status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 3 + [429] * 5
