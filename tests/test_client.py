"""The client library (``sorakit.client``) against the real server app, in-process.

``SoraClient`` runs over the ``Api`` fixture's TestClient (or a TestClient over a small ASGI
wrapper of the same app, when a test needs a server that behaves differently); the async client
runs over ``httpx2.ASGITransport``. Polling is fast and backoff never sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import jwt
import pytest
from fastapi.testclient import TestClient

from sorakit.client import AsyncSoraClient, RetryPolicy, SoraClient, errors, files
from sorakit.client.core import Core
from sorakit.engines.preview import PreviewEngine
from sorakit.media.encode import probe
from sorakit.server import auth
from sorakit.worker import WorkerPool

BASE = "http://testserver"
FAST = {"poll_interval": (0.05, 0.1), "poll_max": 0.2, "retry": RetryPolicy(wait=False)}


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split()[1]


def client_for(api, token: str | None = "alice", http: httpx2.Client | None = None, **kw) -> SoraClient:
    """A fast-polling SoraClient as ``token`` (a user name of the Api, a raw token, or None)."""
    if token in ("alice", "bob"):
        token = token_of(getattr(api, token))
    return SoraClient(BASE, token, http_client=http or api.client, **{**FAST, **kw})


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- ASGI wrappers: the same app, answering a little differently ---------------------------------
class Recorder:
    """Records (monotonic time, method, path, query) of every HTTP request, then passes it on."""

    def __init__(self, app) -> None:
        self.app = app
        self.seen: list[tuple[float, str, str, str]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.seen.append((time.monotonic(), scope["method"], scope["path"],
                              scope.get("query_string", b"").decode()))
        await self.app(scope, receive, send)

    def count(self, path_re: str) -> int:
        return sum(1 for _, _, path, _ in self.seen if re.search(path_re, path))

    def times(self, path_re: str) -> list[float]:
        return [t for t, _, path, _ in self.seen if re.search(path_re, path)]


class WithoutTasksV2(Recorder):
    """A server that never had ``/backend/nf/tasks/...``: 404 in the error envelope."""

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/backend/nf/tasks/"):
            self.seen.append((time.monotonic(), scope["method"], scope["path"], ""))
            body = json.dumps({"error": {"message": "Not found", "type": "invalid_request_error",
                                         "param": None, "code": "not_found"}}).encode()
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await super().__call__(scope, receive, send)


class HideFromPending(Recorder):
    """Removes the ids in ``hidden`` from the next ``times`` answers of ``pending/v2`` that list them,
    like the live service, where a brand-new task could be missing from the first poll or two."""

    def __init__(self, app, times: int = 2) -> None:
        super().__init__(app)
        self.hidden: set[str] = set()
        self.left = times
        self.removed = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/backend/nf/pending/v2" or not self.hidden:
            await super().__call__(scope, receive, send)
            return
        self.seen.append((time.monotonic(), scope["method"], scope["path"], ""))
        start, chunks = {}, []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if start.get("status") == 200 and self.left > 0:
            items = json.loads(body)
            kept = [t for t in items if t.get("id") not in self.hidden]
            if len(kept) != len(items):
                self.left -= 1
                self.removed += 1
                body = json.dumps(kept).encode()
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": start["status"], "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def wrapped():
    """A TestClient over a wrapper of an Api's app. Not entered: the Api's own TestClient already
    runs the lifespan (and its workers); this one only carries requests."""
    made: list[TestClient] = []

    def factory(wrapper) -> TestClient:
        client = TestClient(wrapper, raise_server_exceptions=False)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


def expired_token(api, name: str = "alice") -> tuple[str, float]:
    store = api.services.store
    user = store.user_by_name(name)
    real_clock = store.clock
    store.clock = lambda: real_clock() - 7200  # issued two hours ago, valid for one
    try:
        token, row = auth.issue(store, api.services.jwt_key, user["id"], 3600)
    finally:
        store.clock = real_clock
    return token, float(jwt.decode(token, options={"verify_signature": False})["exp"])


def task_count(api) -> int:
    from sqlalchemy import func, select

    from sorakit.store.schema import tasks

    with api.services.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(tasks)).scalar_one()


# -- every error the server sends maps to one class ---------------------------------------------
EXPECTED_BY_CODE = {
    "invalid_token": errors.InvalidTokenError,
    "token_expired": errors.TokenExpiredError,
    "token_invalidated": errors.TokenRevokedError,
    "invalid_request": errors.BadRequestError,
    "not_found": errors.NotFoundError,
    "idempotency_key_conflict": errors.ConflictError,
    "too_many_concurrent_tasks": errors.ConcurrencyLimitError,
    "rate_limit_exhausted": errors.DailyLimitError,
    "server_overloaded": errors.OverloadedError,
}


def _raised(call) -> errors.APIError:
    with pytest.raises(errors.APIError) as info:
        call()
    return info.value


def test_every_server_error_code_maps_to_one_class(make_api):
    api = make_api(workers=0)
    store = api.services.store
    alice = client_for(api)
    got: dict[str, errors.APIError] = {}

    # section 1: tokens
    for token in (None, "not-a-jwt", "eyJhbGciOi.garbage.x"):
        exc = _raised(lambda: client_for(api, token).usage())
        assert isinstance(exc, errors.InvalidTokenError) and exc.status == 401
        assert exc.message.startswith("Could not parse your authentication token")
        got["invalid_token"] = exc
    token, exp = expired_token(api)
    exc = _raised(lambda: client_for(api, token).pending())
    assert exc.expired_at == exp
    assert datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%d %H:%M:%S") in str(exc)
    got["token_expired"] = exc
    fresh, row = auth.issue(store, api.services.jwt_key, store.user_by_name("alice")["id"], 3600)
    assert client_for(api, fresh).usage()
    assert store.revoke_token(row["id"])
    exc = _raised(lambda: client_for(api, fresh).usage())
    assert "has been invalidated" in str(exc)
    got["token_invalidated"] = exc

    # section 6: requests
    for prompt, fields, param in (("   ", {}, "prompt"), ("ok", {"orientation": "diagonal"}, "orientation"),
                                  ("ok", {"n_frames": 0}, "n_frames")):
        exc = _raised(lambda: alice.create(prompt, **fields))
        assert exc.status == 400 and exc.param == param
        got["invalid_request"] = exc
    for call in (lambda: alice.task("task_nope"), lambda: alice.draft("gen_nope"),
                 lambda: alice.cancel("task_nope")):
        exc = _raised(call)
        assert exc.status == 404
        got["not_found"] = exc
    first = alice.create("a lighthouse", n_frames=1, idempotency_key="key-1")
    assert alice.create("a lighthouse", n_frames=1, idempotency_key="key-1")["id"] == first["id"]
    exc = _raised(lambda: alice.create("a different lighthouse", n_frames=1, idempotency_key="key-1"))
    assert exc.status == 409 and exc.param == "Idempotency-Key"
    got["idempotency_key_conflict"] = exc

    # 429 too many concurrent, 429 daily limit, 503 heavy load: each on a server set up for it
    conc = make_api(workers=0, default_concurrency=1)
    c = client_for(conc)
    c.create("one", n_frames=1)
    exc = _raised(lambda: c.create("two", n_frames=1))
    assert exc.status == 429 and exc.retry_after and exc.retry_after > 0 and exc.in_progress == 1
    got["too_many_concurrent_tasks"] = exc
    assert task_count(conc) == 1  # a 429 is certain: no retry, no second task

    daily = make_api(workers=0, default_daily_limit=1)
    c = client_for(daily)
    c.create("one", n_frames=1)
    exc = _raised(lambda: c.create("two", n_frames=1))
    assert exc.status == 429 and exc.retry_after and exc.retry_after >= 1
    got["rate_limit_exhausted"] = exc

    busy = make_api(workers=0, max_queue=1)
    c = client_for(busy)
    c.create("one", n_frames=1)
    exc = _raised(lambda: c.create("two", n_frames=1))
    assert exc.status == 503 and exc.retry_after == 30
    assert str(exc).startswith("We're under heavy load")
    got["server_overloaded"] = exc
    assert task_count(busy) == 1  # the retries after 503 made nothing

    assert {code: type(e) for code, e in got.items()} == EXPECTED_BY_CODE
    assert {code: e.code for code, e in got.items()} == {code: code for code in EXPECTED_BY_CODE}
    for exc in got.values():
        assert isinstance(exc, errors.APIError) and isinstance(exc, errors.SoraError)
    for code in ("invalid_token", "token_expired", "token_invalidated"):
        assert isinstance(got[code], errors.AuthenticationError)
    for code in ("too_many_concurrent_tasks", "rate_limit_exhausted"):
        assert isinstance(got[code], errors.RateLimitError)
    assert isinstance(got["server_overloaded"], errors.ServerError)


@pytest.mark.parametrize("status,body,headers,cls,attrs", [
    (500, {"error": {"message": "boom", "type": "server_error", "param": None, "code": "internal_error"}},
     {}, errors.ServerError, {"code": "internal_error"}),
    (502, "<html>Bad Gateway</html>", {}, errors.ServerError, {"code": None}),
    (503, {"error": {"message": "We're under heavy load, please try again later.", "type": "server_error",
                     "param": None, "code": None}, "status": 503},
     {"retry-after": "12"}, errors.OverloadedError, {"retry_after": 12.0}),
    (403, '<?xml version="1.0"?><Error><Code>AuthenticationFailed</Code></Error>', {},
     errors.PermissionDeniedError, {}),
    (401, {"error": {"message": "new kind of 401", "code": "session_gone"}}, {},
     errors.AuthenticationError, {"code": "session_gone"}),
    (401, {"error": {"message": "expired", "code": "token_expired"}}, {}, errors.TokenExpiredError,
     {"expired_at": None}),
    (429, {"detail": "slow down"}, {"retry-after": "7"}, errors.RateLimitError, {"retry_after": 7.0}),
    (429, {"error": {"message": "x", "code": "too_many_concurrent_tasks"}}, {"retry-after": "-3"},
     errors.ConcurrencyLimitError, {"retry_after": 0.0, "in_progress": None}),
    (422, {"detail": [{"loc": ["body", "prompt"]}]}, {}, errors.BadRequestError, {}),
    (409, {"error": {"message": "dup", "code": "idempotency_key_conflict", "param": "Idempotency-Key"}},
     {}, errors.ConflictError, {"param": "Idempotency-Key"}),
    (418, {}, {}, errors.APIError, {"retry_after": None}),
])
def test_from_response_on_bodies_the_server_does_not_send(status, body, headers, cls, attrs):
    exc = errors.from_response(status, body, httpx2.Headers(headers))
    assert type(exc) is cls and exc.status == status
    assert f"HTTP {status}" in str(exc)
    for name, value in attrs.items():
        assert getattr(exc, name) == value, name


def test_from_response_redacts_signatures_and_tokens():
    body = {"error": {"message": "refused https://h/assets/x?se=1&sp=r&sig=SECRETSIG for Bearer eyJ.abc.def",
                      "code": "invalid_request"}}
    exc = errors.from_response(400, body, {})
    assert "SECRETSIG" not in str(exc) and "eyJ.abc.def" not in str(exc)
    assert "sig=REDACTED" in str(exc)


def test_token_expired_message_names_the_expiry(make_api):
    api = make_api(workers=0)
    token, exp = expired_token(api)
    with pytest.raises(errors.TokenExpiredError) as info:
        client_for(api, token).create("late", n_frames=1)
    assert info.value.expired_at == exp
    assert datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") in str(info.value)
    assert token not in str(info.value)
    assert task_count(api) == 0


def test_a_refused_create_never_adopts_an_earlier_task_with_the_same_prompt(make_api):
    busy = make_api(workers=0, max_queue=1)
    c = client_for(busy)
    first = c.create("the same prompt twice", n_frames=1)
    # The queue is full: the second create is refused with 503 (five times) and makes no task.
    try:
        second = c.create("the same prompt twice", n_frames=1)
    except errors.OverloadedError:
        return
    assert second["id"] != first["id"], "the first task was returned for the second request"


# -- task outcomes -----------------------------------------------------------------------------
def test_content_violation_is_its_own_error(make_api, tmp_path):
    api = make_api(blocked_terms=["volcano"])
    c = client_for(api)
    with pytest.raises(errors.ContentViolationError) as info:
        c.generate("A Volcano at dawn", n_frames=2, output=str(tmp_path / "{task_id}.mp4"))
    exc = info.value
    assert isinstance(exc, errors.TaskFailedError) and isinstance(exc, errors.TaskError)
    assert "Volcano" in exc.reason and exc.markdown_reason and "**" in exc.markdown_reason
    assert exc.task_id.startswith("task_") and exc.task["status"] == "failed"
    assert not list(tmp_path.glob("*.mp4*"))


def test_cancelled_task_raises_task_cancelled(make_api):
    api = make_api(workers=0)
    c = client_for(api)
    task_id = c.create("never mind", n_frames=5)["id"]
    assert c.cancel(task_id)["status"] == "cancelled"
    with pytest.raises(errors.TaskCancelledError) as info:
        c.wait(task_id)
    assert info.value.task_id == task_id and not isinstance(info.value, errors.TaskFailedError)


class ExplodingEngine(PreviewEngine):
    name = "exploding"

    def frames(self, job, ctx):
        yield from super().frames(job, ctx)
        raise RuntimeError("the GPU caught fire")


def test_engine_failure_raises_task_failed(make_api):
    api = make_api(engines={"preview": PreviewEngine(), "exploding": ExplodingEngine()},
                   models={"boom": "exploding"})
    c = client_for(api)
    task_id = c.create("doomed", model="boom", n_frames=2)["id"]
    with pytest.raises(errors.TaskFailedError) as info:
        c.wait(task_id)
    assert type(info.value) is errors.TaskFailedError
    assert "the GPU caught fire" in info.value.reason and info.value.task_id == task_id


def test_wait_gives_up_after_its_timeout(make_api):
    api = make_api(workers=0)
    c = client_for(api)
    task_id = c.create("stuck in the queue", n_frames=1)["id"]
    started = time.monotonic()
    with pytest.raises(errors.WaitTimeoutError):
        c.wait(task_id, timeout=0.4)
    assert time.monotonic() - started < 2.0


# -- generate: the MP4 and its sidecar --------------------------------------------------------------
def test_generate_writes_the_video_and_its_sidecar(make_api, tmp_path):
    api = make_api()
    c = client_for(api)
    progress: list[dict] = []
    before = time.time()
    result = c.generate("a paper boat in a gutter stream", n_frames=12, orientation="landscape",
                        output=str(tmp_path / "{task_id}.mp4"), on_progress=progress.append)
    assert result.path == tmp_path / f"{result.task['id']}.mp4" and result.path.is_file()
    assert not list(tmp_path.glob("*.part"))
    info = probe(result.path)
    assert (info.width, info.height, info.n_frames) == (640, 352, 12)
    assert result.sha256 == sha256(result.path)
    server_file = api.settings.media_dir / result.draft["id"] / "video.mp4"
    assert sha256(server_file) == result.sha256
    assert progress and progress[-1]["status"] == "succeeded"

    sidecar = json.loads(result.sidecar.read_text())
    assert result.sidecar == result.path.with_name(result.path.name + ".json")
    assert sidecar["prompt"] == "a paper boat in a gutter stream"
    assert sidecar["parameters"] == Core.create_body("a paper boat in a gutter stream", n_frames=12,
                                                     orientation="landscape")
    assert sidecar["task_id"] == result.task["id"] and sidecar["generation_id"] == result.draft["id"]
    assert sidecar["server"] == BASE and sidecar["file"] == result.path.name
    assert sidecar["sha256"] == sha256(result.path)
    assert (sidecar["width"], sidecar["height"], sidecar["n_frames"]) == (640, 352, 12)
    assert before <= sidecar["requested_at"] <= sidecar["created_at"] <= sidecar["downloaded_at"] <= time.time()
    assert "sig=" not in result.sidecar.read_text()


def test_async_generate(make_api, tmp_path):
    api = make_api()

    async def main():
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(api.app), base_url=BASE) as http:
            c = AsyncSoraClient(BASE, token_of(api.alice), http_client=http, **FAST)
            return await c.generate("an async kite", n_frames=3, output=str(tmp_path / "{gen_id}.mp4"))

    result = asyncio.run(main())
    assert result.path.name == f"{result.draft['id']}.mp4" and probe(result.path).n_frames == 3
    assert json.loads(result.sidecar.read_text())["sha256"] == sha256(result.path)


# -- finished tasks: kept in pending, or gone from it ---------------------------------------------
def test_finished_tasks_kept_in_pending_resolve_from_pending_alone(make_api, wrapped, tmp_path):
    api = make_api(finished_window_seconds=300)
    rec = Recorder(api.app)
    c = client_for(api, http=wrapped(rec))
    result = c.generate("kept in the list", n_frames=3, output=str(tmp_path / "{task_id}.mp4"))
    assert probe(result.path).n_frames == 3
    assert rec.count(r"^/backend/nf/pending/v2$") >= 1
    assert rec.count(r"^/backend/nf/tasks/") == 0 and rec.count(r"/drafts") == 0


def test_finished_tasks_that_vanish_resolve_through_tasks_v2(make_api, wrapped, tmp_path):
    api = make_api(finished_window_seconds=0)
    rec = Recorder(api.app)
    c = client_for(api, http=wrapped(rec))
    result = c.generate("gone from the list", n_frames=3, output=str(tmp_path / "{task_id}.mp4"))
    assert result.task["status"] == "succeeded" and probe(result.path).n_frames == 3
    assert rec.count(r"^/backend/nf/tasks/task_\w+/v2$") >= 1
    assert api.client.get("/backend/nf/pending/v2", headers=api.alice).json() == []


def test_without_tasks_v2_the_task_is_found_in_the_drafts_past_the_first_page(make_api, wrapped, tmp_path):
    api = make_api(workers=0, finished_window_seconds=0, default_concurrency=20)
    server = WithoutTasksV2(api.app)
    c = client_for(api, http=wrapped(server))
    target = c.create("the one we wait for", n_frames=1)["id"]
    others = [c.create(f"a newer video {i}", n_frames=1)["id"] for i in range(16)]
    pool = WorkerPool(api.services, 1)  # one worker, in creation order: the target's draft is oldest
    pool.start()
    try:
        api.wait(others[-1], timeout=60)
    finally:
        pool.stop()
    first_page = api.client.get("/backend/project_y/profile/drafts", headers=api.alice).json()["items"]
    assert len(first_page) == 15 and target not in {d["task_id"] for d in first_page}

    task = c.wait(target)
    assert task["id"] == target and task["status"] == "succeeded"
    draft = task["generations"][0]
    assert draft["task_id"] == target and draft["url"]
    assert server.count(r"^/backend/nf/tasks/") >= 1  # it asked, got 404, and searched the drafts
    cursors = [q for _, _, path, q in server.seen if "/drafts" in path and "cursor=" in q]
    assert cursors, "the client never asked for a second page of drafts"
    sha = c.download(task["generations"][0], tmp_path / "found.mp4")
    assert sha == sha256(api.settings.media_dir / draft["id"] / "video.mp4")


def test_without_tasks_v2_a_refused_prompt_is_found_as_a_violation_draft(make_api, wrapped):
    api = make_api(finished_window_seconds=0, blocked_terms=["volcano"])
    c = client_for(api, http=wrapped(WithoutTasksV2(api.app)))
    task_id = c.create("a volcano", n_frames=1)["id"]
    with pytest.raises(errors.ContentViolationError) as info:
        c.wait(task_id)
    assert "volcano" in info.value.reason


def test_a_new_task_missing_from_the_first_two_polls(make_api, wrapped):
    api = make_api(workers=0)
    hider = HideFromPending(api.app, times=2)
    c = client_for(api, http=wrapped(hider))
    task_id = c.create("shy at first", n_frames=2)["id"]
    hider.hidden.add(task_id)
    pool = WorkerPool(api.services, 1)
    pool.start()
    try:
        task = c.wait(task_id)
    finally:
        pool.stop()
    assert task["status"] == "succeeded" and task["generations"][0]["url"]
    assert hider.removed == 2
    assert hider.count(r"^/backend/nf/tasks/") == 0  # two misses are within the grace: no lookups


# -- the async client: one poller for every wait ----------------------------------------------------
def test_concurrent_async_waits_share_one_poller(make_api):
    n = 5
    api = make_api(workers=2, default_concurrency=n, preview_pace=0.6)
    rec = Recorder(api.app)

    async def main():
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(rec), base_url=BASE) as http:
            c = AsyncSoraClient(BASE, token_of(api.alice), http_client=http, poll_interval=(0.05, 0.1),
                                poll_max=0.2, retry=RetryPolicy(base=0.01))
            ids = [(await c.create(f"video {i}", n_frames=6))["id"] for i in range(n)]
            mark = len(rec.seen)
            started = time.monotonic()
            updates: list[str] = []
            tasks = await asyncio.gather(*(c.wait(t, on_progress=lambda t: updates.append(t["id"]))
                                           for t in ids))
            return ids, tasks, mark, time.monotonic() - started, updates

    ids, tasks, mark, elapsed, updates = asyncio.run(main())
    assert [t["id"] for t in tasks] == ids and all(t["status"] == "succeeded" for t in tasks)
    assert set(updates) == set(ids)
    polls = [t for t, _, path, _ in rec.seen[mark:] if path == "/backend/nf/pending/v2"]
    cycles_at_most = elapsed / 0.05 + 1
    assert 3 <= len(polls) <= cycles_at_most, (len(polls), elapsed)
    gaps = [b - a for a, b in zip(polls, polls[1:])]
    assert min(gaps) >= 0.045, f"pending/v2 was asked in bursts (one per task?): {sorted(gaps)[:5]}"
    assert len(polls) < n * (elapsed / 0.1), "about one pending/v2 per task per cycle"


# -- output names --------------------------------------------------------------------------------------
def test_output_templates_fill_every_field(make_api, tmp_path):
    api = make_api()
    c = client_for(api)
    out = tmp_path / "out"
    template = str(out / "{date}_{index}_{prompt_slug}_{task_id}_{gen_id}.mp4")
    result = c.generate("Ünïcode & a Paper Boat!", n_frames=1, output=template, index=7)
    today = time.strftime("%Y%m%d")
    expected = f"{today}_007_unicode-a-paper-boat_{result.task['id']}_{result.draft['id']}.mp4"
    assert result.path == out / expected and result.path.is_file()
    assert result.sidecar.is_file() and result.sidecar.parent == out


@pytest.mark.parametrize("prompt", ["../../etc/passwd", "/etc/passwd", "..", "a/../../../b", "\x00/..\\..",
                                    "~root/.ssh/authorized_keys", ". ."])
def test_a_prompt_cannot_leave_the_output_directory(prompt, tmp_path):
    out = tmp_path / "videos"
    path = files.render(str(out / "{prompt_slug}-{index}.mp4"), task_id="task_1", prompt=prompt)
    assert path.parent == out and path.resolve().parent == out.resolve()
    assert ".." not in path.name and "/" not in path.name and "\\" not in path.name
    assert files.render("{prompt_slug}", task_id="t", prompt=prompt).parent == Path(".")


def test_generate_keeps_a_dot_dot_prompt_inside_the_directory(make_api, tmp_path):
    api = make_api()
    top = tmp_path / "top"
    out = top / "a" / "out"
    result = client_for(api).generate("../../etc/passwd", n_frames=1, output=str(out / "{prompt_slug}.mp4"))
    assert result.path == out / "etc-passwd.mp4" and result.path.is_file()
    written = sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file())
    assert written == ["a/out/etc-passwd.mp4", "a/out/etc-passwd.mp4.json"]
    assert not list(tmp_path.rglob("passwd"))


def test_ids_with_odd_characters_are_made_safe():
    path = files.render("{task_id}/{gen_id}.mp4", task_id="../x", gen_id="a/b")
    assert path == Path("x/a_b.mp4")
    assert files.render("{task_id}", task_id="t").suffix == ".mp4"


@pytest.mark.parametrize("template", ["{nope}.mp4", "{0}.mp4", "{task_id", "sora_{}.mp4", "{index:d}"])
def test_bad_templates_raise_template_error(template):
    with pytest.raises(files.TemplateError) as info:
        files.render(template, task_id="task_1")
    assert "{task_id}" in str(info.value)


@pytest.mark.parametrize("template", ["{task_id.nope}.mp4", "{index.real}.mp4"])
def test_attribute_lookups_in_templates_raise_template_error(template):
    with pytest.raises(files.TemplateError):
        files.render(template, task_id="task_1")


def test_generate_with_a_bad_template_raises_template_error(make_api):
    api = make_api()
    with pytest.raises(files.TemplateError):
        client_for(api).generate("x", n_frames=1, output="{nope}.mp4")


def test_generate_checks_the_template_before_creating_anything(make_api):
    api = make_api(workers=0)
    with pytest.raises(files.TemplateError):
        client_for(api).generate("x", n_frames=1, output="{nope}.mp4", timeout=1)
    assert task_count(api) == 0


# -- drafts, usage, cancel, downloads --------------------------------------------------------------
def test_drafts_iterates_across_pages(make_api, wrapped):
    api = make_api(default_concurrency=5)
    rec = Recorder(api.app)
    c = client_for(api, http=wrapped(rec))
    ids = [c.create(f"draft {i}", n_frames=1)["id"] for i in range(4)]
    watches = c.wait_many(ids)
    assert all(w.done and w.error is None for w in watches)
    listed = list(c.drafts(limit=3))
    assert len(listed) == 4 and len({d["id"] for d in listed}) == 4
    assert {d["task_id"] for d in listed} == set(ids)
    created = [d["created_at"] for d in listed]
    assert created == sorted(created, reverse=True)
    assert rec.count(r"/drafts/v2$") == 2
    assert list(client_for(api, "bob").drafts()) == []


def test_usage_reports_the_quota(make_api):
    api = make_api(workers=0, default_daily_limit=5)
    c = client_for(api)
    before = c.usage()["rate_limit_and_credit_balance"]
    assert before["estimated_num_videos_remaining"] == 5 and before["rate_limit_reached"] is False
    c.create("one", n_frames=1)
    after = c.usage()
    assert after["rate_limit_and_credit_balance"]["estimated_num_videos_remaining"] == 4
    assert after["tasks_in_progress"] == 1


def test_cancel_a_queued_task(make_api):
    api = make_api(workers=0)
    c = client_for(api)
    task_id = c.create("cancel me", n_frames=3)["id"]
    cancelled = c.cancel(task_id)
    assert cancelled["id"] == task_id and cancelled["failure_reason"] == "task_cancelled"
    assert c.task(task_id)["status"] == "cancelled"
    assert c.pending()[0]["status"] == "cancelled"


def test_download_by_task_id_gen_id_and_draft(make_api, tmp_path):
    api = make_api()
    c = client_for(api)
    task = c.wait(c.create("three ways", n_frames=2)["id"])
    gen_id = task["generations"][0]["id"]
    expected = sha256(api.settings.media_dir / gen_id / "video.mp4")
    assert c.download(task["id"], tmp_path / "a.mp4") == expected
    assert c.download(gen_id, tmp_path / "b.mp4") == expected
    assert c.download(c.draft(gen_id), tmp_path / "c" / "d.mp4") == expected
    assert sha256(tmp_path / "c" / "d.mp4") == expected
    sizes: list[int] = []
    c.download(gen_id, tmp_path / "e.mp4", on_bytes=sizes.append)
    assert sizes and sizes[-1] == (tmp_path / "e.mp4").stat().st_size


def test_an_expired_link_is_refreshed_from_the_draft(make_api, tmp_path):
    api = make_api()
    c = client_for(api)
    task = c.wait(c.create("old link", n_frames=2)["id"])
    draft = task["generations"][0]
    path = f"/assets/{draft['id']}/video.mp4"
    stale = BASE + api.services.signer.sign(path, now=time.time() - 7200, ttl=60)
    assert api.client.get(stale).status_code == 403
    sha = c.download({**draft, "url": stale, "downloadable_url": stale, "video_url": stale,
                      "download_url": stale}, tmp_path / "v.mp4")
    assert sha == sha256(api.settings.media_dir / draft["id"] / "video.mp4")


def test_a_deleted_draft_is_a_download_error(make_api, tmp_path):
    api = make_api()
    c = client_for(api)
    task = c.wait(c.create("soon gone", n_frames=2)["id"])
    draft = task["generations"][0]
    assert api.client.delete(f"/backend/project_y/profile/drafts/{draft['id']}", headers=api.alice).status_code == 200
    with pytest.raises(errors.DownloadError):
        c.download(draft, tmp_path / "gone.mp4")
    assert not (tmp_path / "gone.mp4").exists()


def test_clients_are_usable_from_threads(make_api):
    """One SoraClient per thread over the same app: every task is followed to its end."""
    api = make_api(workers=2, default_concurrency=6)
    results: dict[int, dict] = {}

    def run(i):
        c = client_for(api)
        results[i] = c.wait(c.create(f"thread {i}", n_frames=1)["id"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 1, 2, 3] and all(r["status"] == "succeeded" for r in results.values())


@pytest.mark.parametrize("leftover", ["half", "all", "too_long"])
def test_a_leftover_part_file_is_resumed_or_started_over(make_api, tmp_path, leftover):
    api = make_api()
    c = client_for(api)
    task = c.wait(c.create("interrupted yesterday", n_frames=20)["id"])
    server_file = api.settings.media_dir / task["generations"][0]["id"] / "video.mp4"
    data = server_file.read_bytes()
    part = tmp_path / "v.mp4.part"
    part.write_bytes({"half": data[: len(data) // 2], "all": data, "too_long": data + b"x" * 100}[leftover])
    assert c.download(task["id"], tmp_path / "v.mp4") == hashlib.sha256(data).hexdigest()
    assert not part.exists()


def test_wait_many_keeps_each_outcome_on_its_own_watch(make_api):
    api = make_api(blocked_terms=["volcano"], default_concurrency=5)
    c = client_for(api)
    good = c.create("a calm lake", n_frames=1)["id"]
    bad = c.create("a volcano", n_frames=1)["id"]
    cancelled = c.create("changed my mind", n_frames=200)["id"]
    c.cancel(cancelled)
    seen: set[str] = set()
    watches = c.wait_many([good, bad, cancelled], on_progress=lambda t: seen.add(t["id"]))
    by_id = {w.task_id: w for w in watches}
    assert by_id[good].error is None and by_id[good].task["status"] == "succeeded"
    assert isinstance(by_id[bad].error, errors.ContentViolationError)
    assert isinstance(by_id[cancelled].error, errors.TaskCancelledError)
    assert all(w.done for w in watches) and seen == {good, bad, cancelled}


def test_a_refused_prompt_has_nothing_to_download(make_api, tmp_path):
    api = make_api(blocked_terms=["volcano"])
    c = client_for(api)
    task_id = c.create("a volcano", n_frames=1)["id"]
    with pytest.raises(errors.DownloadError):
        c.download(task_id, tmp_path / "v.mp4")


def test_a_part_file_of_another_video_is_never_resumed(make_api, tmp_path):
    api = make_api(default_concurrency=5)
    c = client_for(api)
    a = c.wait(c.create("first video", n_frames=20)["id"])["generations"][0]
    b = c.wait(c.create("second video", n_frames=20)["id"])["generations"][0]
    dest = tmp_path / "same-name.mp4"
    first = api.client.get(a["url"]).content
    (tmp_path / "same-name.mp4.part").write_bytes(first[:4000])  # left over by video A
    sha = c.download(b, dest)
    expected = (api.settings.media_dir / b["id"] / "video.mp4").read_bytes()
    assert dest.read_bytes() == expected and sha == hashlib.sha256(expected).hexdigest()
    assert not (tmp_path / "same-name.mp4.part.json").exists()
