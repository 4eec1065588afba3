"""Webhooks end to end: endpoints registered with the CLI, deliveries queued with the task's end,
signed POSTs to a real loopback receiver that the openai SDK verifies, retries, give-up, a hanging
receiver, and a delivery that waits across a server crash.

Backoff comes from ``SORAKIT_WEBHOOK_BACKOFF`` so retries take fractions of a second here.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from sorakit.cli.main import app as cli
from sorakit.ids import video_id
from sorakit.store import Claim, open_store
from sorakit.store import webhooks as store_webhooks
from sorakit.store.webhooks import WebhookStore, notify_on_commit

try:
    from serverproc import ServerProcess, free_port
except ImportError:  # tests/ made a package
    from tests.serverproc import ServerProcess, free_port

SDK = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:1/v1")  # never connects: unwrap is local


# -- a loopback receiver ------------------------------------------------------------------------
@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    arrived: float  # time.monotonic()


class Receiver:
    """Records every POST; answers with ``answers`` in turn (then 200), after ``delay`` seconds."""

    def __init__(self, answers=(), delay: float = 0.0, port: int | None = None) -> None:
        self.answers, self.delay = list(answers), delay
        self.port = port or free_port()
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        body = handler.rfile.read(int(handler.headers.get("content-length", 0)))
        with self.lock:
            self.requests.append(Received({k.lower(): v for k, v in handler.headers.items()}, body, arrived))
            code = self.answers.pop(0) if self.answers else 200
        time.sleep(self.delay)
        try:
            handler.send_response(code)
            handler.send_header("content-length", "0")
            handler.end_headers()
        except OSError:  # the sender gave up waiting
            pass

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._answer(self)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} requests arrived"
            time.sleep(0.02)
        return list(self.requests)


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def start(*args, **kwargs) -> Receiver:
        made.append(Receiver(*args, **kwargs).start())
        return made[-1]

    yield start
    for receiver in made:
        receiver.stop()


@pytest.fixture(autouse=True)
def fast_retries(isolated_env, monkeypatch):
    monkeypatch.setenv("SORAKIT_WEBHOOK_BACKOFF", "0.2,0.2,0.2")


def unwrap(got: Received, secret: str):
    return SDK.webhooks.unwrap(got.body, got.headers, secret=secret)


def add_endpoint(data_dir: Path, user: str, url: str, *options: str) -> tuple[str, str]:
    """``sorakit webhooks add``; returns (id, secret): the id from the first line, the secret alone
    on the last."""
    reply = CliRunner().invoke(cli, ["webhooks", "add", user, url, *options, "--data-dir", str(data_dir)])
    assert reply.exit_code == 0, reply.output
    lines = reply.stdout.strip().splitlines()
    return lines[0].split()[1], lines[-1]


def deliveries(api) -> list[dict]:
    return WebhookStore(api.services.store.engine).deliveries()


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"{what} not reached"
        time.sleep(0.05)
    return found


# -- through the in-process app -----------------------------------------------------------------
def test_a_finished_video_sends_one_signed_video_completed(make_api, receivers):
    api = make_api()
    alices, bobs = receivers(), receivers()
    endpoint_id, secret = add_endpoint(api.settings.data_dir, "alice", alices.url)
    add_endpoint(api.settings.data_dir, "bob", bobs.url)
    task_id = api.create(n_frames=30).json()["id"]
    assert api.wait(task_id)["status"] == "succeeded"

    [got] = alices.wait(1)
    event = unwrap(got, secret)
    assert (event.type, event.object, event.data.id) == ("video.completed", "event", video_id(task_id))
    assert event.id.startswith("evt_") and got.headers["webhook-id"] == event.id
    assert got.headers["content-type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    body = json.loads(got.body)
    assert set(body) == {"id", "object", "created_at", "type", "data"} and isinstance(body["created_at"], int)

    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.unwrap(got.body.replace(b"completed", b"failed"), got.headers, secret=secret)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.unwrap(got.body, got.headers, secret=store_webhooks.new_secret())

    [row] = wait_for(lambda: [d for d in deliveries(api) if d["status"] == "delivered"], what="delivered")
    assert (row["endpoint_id"], row["attempts"], row["last_status"]) == (endpoint_id, 1, 200)
    time.sleep(0.6)  # past the retry schedule: nothing more comes
    assert len(alices.requests) == 1 and bobs.requests == []  # bob hears only of his own videos


def test_a_refused_prompt_sends_video_failed(make_api, receivers):
    api = make_api(blocked_terms=["forbidden"])
    receiver = receivers()
    _, secret = add_endpoint(api.settings.data_dir, "alice", receiver.url)
    task_id = api.create(prompt="a forbidden castle", n_frames=30).json()["id"]
    assert api.wait(task_id)["status"] == "failed"
    event = unwrap(receiver.wait(1)[0], secret)
    assert (event.type, event.data.id) == ("video.failed", video_id(task_id))


def test_a_cancelled_task_sends_video_failed_to_endpoints_that_want_it(make_api, receivers):
    api = make_api(workers=0)  # nothing runs: the task is still queued when it is cancelled
    every, completions = receivers(), receivers()
    _, secret = add_endpoint(api.settings.data_dir, "alice", every.url)
    add_endpoint(api.settings.data_dir, "alice", completions.url, "--events", "video.completed")
    task_id = api.create(n_frames=30).json()["id"]
    assert api.client.post(f"/backend/nf/tasks/{task_id}/cancel", headers=api.alice).status_code == 200
    event = unwrap(every.wait(1)[0], secret)
    assert (event.type, event.data.id) == ("video.failed", video_id(task_id))
    time.sleep(0.5)
    assert completions.requests == []


def test_a_500_is_retried_with_the_same_id_and_a_200_ends_it(make_api, receivers):
    api = make_api()
    receiver = receivers(answers=[500])
    _, secret = add_endpoint(api.settings.data_dir, "alice", receiver.url)
    api.wait(api.create(n_frames=30).json()["id"])
    first, second = receiver.wait(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == unwrap(second, secret).id
    assert unwrap(first, secret).id == unwrap(second, secret).id
    assert second.arrived - first.arrived >= 0.15  # the backoff was waited
    time.sleep(1.0)
    assert len(receiver.requests) == 2
    [row] = deliveries(api)
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 2, 200)
    assert row["last_error"] is None


def test_a_receiver_that_keeps_failing_is_given_up_after_the_schedule(make_api, receivers, monkeypatch):
    monkeypatch.setenv("SORAKIT_WEBHOOK_BACKOFF", "0.1,0.1")
    api = make_api()
    receiver = receivers(answers=[503] * 10)
    add_endpoint(api.settings.data_dir, "alice", receiver.url)
    api.wait(api.create(n_frames=30).json()["id"])
    [row] = wait_for(lambda: [d for d in deliveries(api) if d["status"] == "failed"], what="given up")
    assert (row["attempts"], row["last_status"], row["last_error"]) == (3, 503, "HTTP 503")
    time.sleep(0.5)
    assert len(receiver.requests) == 3  # the first try and one per backoff step


def test_a_hanging_receiver_delays_no_other_endpoint(make_api, receivers, monkeypatch):
    monkeypatch.setenv("SORAKIT_WEBHOOK_TIMEOUT", "2")
    monkeypatch.setenv("SORAKIT_WEBHOOK_BACKOFF", "0.1,0.1,0.1,0.1,0.1")
    api = make_api()
    hanging, prompt = receivers(delay=10), receivers()
    add_endpoint(api.settings.data_dir, "alice", hanging.url)
    add_endpoint(api.settings.data_dir, "alice", prompt.url)
    api.wait(api.create(n_frames=30).json()["id"])
    [on_time] = prompt.wait(1)
    assert abs(on_time.arrived - hanging.wait(1)[0].arrived) < 1.0  # sent side by side

    # the hanging endpoint is still being retried (each try waits out the timeout); a second
    # video reaches the other receiver as promptly as the first
    api.wait(api.create(n_frames=30).json()["id"])
    finished = time.monotonic()
    assert prompt.wait(2)[1].arrived - finished < 1.5
    failed = wait_for(lambda: [d for d in deliveries(api) if d["last_error"]], what="a timeout recorded")
    assert "Timeout" in failed[0]["last_error"], failed


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_add_list_remove(tmp_path):
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, [*args, "--data-dir", str(tmp_path)], env={"COLUMNS": "200"})

    run("users", "add", "ada")
    added = run("webhooks", "add", "ada", "https://hooks.example.org/sora", "--events", "video.failed")
    assert added.exit_code == 0, added.output
    secret = added.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    endpoint_id = added.stdout.split()[1]

    listing = run("webhooks", "list", "ada")
    assert listing.exit_code == 0, listing.output
    assert endpoint_id in listing.output and "hooks.example.org" in listing.output
    assert "video.failed" in listing.output and secret not in listing.output
    assert endpoint_id in run("webhooks", "list").output

    assert run("webhooks", "remove", endpoint_id).exit_code == 0
    assert endpoint_id not in run("webhooks", "list").output
    assert run("webhooks", "remove", endpoint_id).exit_code == 1


def test_cli_refuses_unknown_users_events_and_urls(tmp_path):
    def run(*args):
        return CliRunner().invoke(cli, [*args, "--data-dir", str(tmp_path)])

    run("users", "add", "ada")
    ghost = run("webhooks", "add", "ghost", "http://127.0.0.1:9/")
    assert ghost.exit_code == 1 and "no user named 'ghost'" in ghost.output
    event = run("webhooks", "add", "ada", "http://127.0.0.1:9/", "--events", "video.started")
    assert event.exit_code == 2 and "video.started" in event.output
    assert run("webhooks", "add", "ada", "ftp://example.org/").exit_code == 2
    assert run("webhooks", "list", "ghost").exit_code == 1


# -- the store: deliveries commit with the task's end, claims are leases -------------------------
def _task(store, user_id: str, **over) -> dict:
    from sorakit.ids import new_id
    row = {"id": new_id("task"), "user_id": user_id, "status": "queued", "prompt": "p", "title": None,
           "model": "sy_8", "engine": "preview", "orientation": "portrait", "size": "small", "n_frames": 3,
           "width": 352, "height": 640, "fps": 30, "seed": 1, "style_id": None, "inpaint_items": [],
           "request": {"prompt": "p"}, "priority": 1, "created_at": store.clock(), "attempts": 0,
           "cancel_requested": False}
    return store.create_task({**row, **over})[0]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stores(database):
    """The store and its webhook store, on SQLite and on PostgreSQL (conftest's ``database``)."""
    store = open_store(database)
    store.clock = Clock()
    yield store, WebhookStore(store.engine, store.clock)
    store.engine.dispose()


def test_an_endpoint_removed_while_a_task_ends(stores, database):
    """Tasks end (queueing their events) while their owner's endpoints are removed from another
    connection: every task's commit succeeds, and no delivery is left naming a removed endpoint."""
    import threading

    store, hooks = stores
    other = WebhookStore(open_store(database).engine)
    ada = store.create_user("ada")["id"]
    for round_ in range(10):
        endpoint = hooks.add_endpoint(ada, f"https://hooks.example/{round_}")
        _task(store, ada)
        claim = store.claim("w", 30, 3)
        go, done = threading.Barrier(2), {}

        def finish():
            go.wait()
            done["finish"] = store.finish(claim, "succeeded")

        def remove():
            go.wait()
            done["remove"] = other.remove_endpoint(endpoint["id"])

        threads = [threading.Thread(target=finish), threading.Thread(target=remove)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert done == {"finish": True, "remove": True}
        assert [d for d in hooks.deliveries() if d["endpoint_id"] == endpoint["id"]] == []
    other.engine.dispose()


def test_every_way_a_task_ends_queues_its_event_in_the_same_transaction(stores):
    store, hooks = stores
    ada, bob = store.create_user("ada")["id"], store.create_user("bob")["id"]
    every = hooks.add_endpoint(ada, "http://127.0.0.1:9/a")["id"]
    failures = hooks.add_endpoint(ada, "http://127.0.0.1:9/b", ["video.failed"])["id"]
    hooks.add_endpoint(bob, "http://127.0.0.1:9/c")

    def events() -> list[tuple[str, str, str]]:
        return [(d["endpoint_id"], d["event_type"], json.loads(d["payload"])["data"]["id"])
                for d in hooks.deliveries()]

    done = _task(store, ada)
    claim = store.claim("w1", 30, 3)
    assert not store.finish(Claim(task=claim.task, owner="not-the-owner"), "succeeded")
    assert events() == []  # a write that did not happen sends nothing
    assert store.finish(claim, "succeeded")
    assert events() == [(every, "video.completed", video_id(done["id"]))]

    refused = _task(store, ada, status="preprocessing")
    store.fail_unclaimed(refused["id"], "refused")
    store.fail_unclaimed(refused["id"], "refused")  # already failed: no second event
    expected = sorted((e, "video.failed", video_id(refused["id"])) for e in (every, failures))
    assert sorted(events()[1:]) == expected
    assert len({d["event_id"] for d in hooks.deliveries()[1:]}) == 1  # one event, two endpoints

    cancelled = _task(store, ada)
    store.request_cancel(cancelled["id"], ada)
    store.request_cancel(cancelled["id"], ada)
    assert [e[2] for e in events()].count(video_id(cancelled["id"])) == 2

    exhausted = _task(store, ada)
    store.claim("w1", 10, 1)
    store.clock.now += 11
    assert store.claim("w2", 10, 1) is None  # gives the dead attempt's task up
    assert store.task(exhausted["id"])["status"] == "failed"
    assert [e[2] for e in events()].count(video_id(exhausted["id"])) == 2


def test_an_event_rolled_back_with_its_transaction_is_never_queued(stores):
    store, hooks = stores
    ada = store.create_user("ada")["id"]
    hooks.add_endpoint(ada, "http://127.0.0.1:9/a")
    task = _task(store, ada)
    woken = []
    undo = notify_on_commit(store.engine, lambda: woken.append(True))
    with pytest.raises(RuntimeError), store.engine.begin() as conn:
        assert store_webhooks.enqueue(conn, task["id"], "failed", store.clock()) == 1
        raise RuntimeError("rolled back")
    assert hooks.deliveries() == [] and woken == []
    with store.engine.begin() as conn:
        store_webhooks.enqueue(conn, task["id"], "failed", store.clock())
    assert len(hooks.deliveries()) == 1 and woken == [True]  # told after the commit, not before
    undo()


def test_claims_lease_one_delivery_per_endpoint(stores):
    store, hooks = stores
    ada = store.create_user("ada")["id"]
    first = hooks.add_endpoint(ada, "http://127.0.0.1:9/a")["id"]
    second = hooks.add_endpoint(ada, "http://127.0.0.1:9/b")["id"]
    for _ in range(2):
        _task(store, ada, status="preprocessing")
    for task_id in store.preprocessing_ids():
        store.fail_unclaimed(task_id, "refused")

    taken = hooks.claim("p1", limit=4, lease=30)  # the oldest of each endpoint
    assert sorted(d["endpoint_id"] for d in taken) == sorted((first, second))
    assert all(d["url"] and d["secret"].startswith("whsec_") and d["attempts"] == 1 for d in taken)
    assert hooks.claim("p2", limit=4, lease=30, busy={first, second}) == []
    store.clock.now += 1
    [later] = hooks.claim("p2", 4, 30, busy={first})
    assert later["endpoint_id"] == second and later["id"] not in {d["id"] for d in taken}

    one = next(d for d in taken if d["endpoint_id"] == first)
    assert not hooks.mark_failed(one["id"], "p2", 500, "HTTP 500", store.clock() + 5)  # not its lease
    assert hooks.mark_failed(one["id"], "p1", 500, "HTTP 500", store.clock() + 5)
    [untried] = hooks.claim("p3", 4, 30, busy={second})  # the retry is not due yet
    assert untried["id"] != one["id"] and untried["attempts"] == 1
    store.clock.now += 5
    again = hooks.claim("p3", 4, 30, busy={second})
    assert [(d["id"], d["attempts"], d["last_error"]) for d in again] == [(one["id"], 2, "HTTP 500")]
    assert hooks.mark_delivered(one["id"], 204) and not hooks.mark_delivered(one["id"], 204)
    store.clock.now += 100  # every other lease ran out: those deliveries are due again
    assert len(hooks.claim("p4", 4, 30)) == 2
    assert hooks.release("p4", [d["id"] for d in hooks.deliveries()]) == 2


# -- a real server process: a delivery outlives a crash ------------------------------------------
def _db_deliveries(data_dir: Path) -> list[dict]:
    conn = sqlite3.connect(f"file:{data_dir / 'sorakit.db'}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM webhook_deliveries")]
    finally:
        conn.close()


@pytest.mark.slow
def test_a_delivery_retried_across_a_server_crash_arrives_once(tmp_path):
    data, port = tmp_path / "data", free_port()
    env = {"SORAKIT_WEBHOOK_BACKOFF": ",".join(["0.5"] * 60), "SORAKIT_WEBHOOK_TIMEOUT": "2"}
    servers: list[ServerProcess] = []
    receiver = Receiver(port=port)  # not listening yet: every attempt is refused
    try:
        servers.append(ServerProcess(data, env=env).start())
        added = subprocess.run([sys.executable, "-m", "sorakit", "webhooks", "add", "local", receiver.url,
                                "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        secret = added.stdout.strip().splitlines()[-1]
        reply = servers[0].request("POST", "/backend/nf/create",
                                   json={"kind": "video", "prompt": "a kite", "n_frames": 30})
        task_id = reply.json()["id"]
        wait_for(lambda: [d for d in _db_deliveries(data) if d["attempts"] >= 2], timeout=30,
                 what="two refused attempts")
        servers[0].kill()
        [row] = _db_deliveries(data)
        assert row["status"] == "pending" and "Connect" in row["last_error"], row

        receiver.start()
        servers.append(ServerProcess(data, env=env).start())
        [got] = receiver.wait(1, timeout=30)
        event = unwrap(got, secret)
        assert (event.type, event.data.id) == ("video.completed", video_id(task_id))
        wait_for(lambda: _db_deliveries(data)[0]["status"] == "delivered", what="recorded as delivered")
        time.sleep(1.5)  # three backoff steps: a duplicate would have come by now
        assert len(receiver.requests) == 1
    finally:
        for server in servers:
            server.kill()
        receiver.stop()
