"""The store on real SQLite files and real PostgreSQL databases (the same tests on both, through the
``database`` fixture): migrations from empty, leases, attempts, exactly-once finish, the fleet's
workers table."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import inspect

from sorakit.store import open_store
from sorakit.store.db import sqlite_engine
from sorakit.store.migrations import MIGRATIONS, applied, migrate


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(database):
    s = open_store(database)
    s.clock = Clock()
    yield s
    s.engine.dispose()


def _task(store, user_id, **over):
    from sorakit.ids import new_id
    row = {"id": new_id("task"), "user_id": user_id, "status": "queued", "prompt": "p", "title": None,
           "model": "sy_8", "engine": "preview", "orientation": "portrait", "size": "small", "n_frames": 3,
           "width": 352, "height": 640, "fps": 30, "seed": 1, "style_id": None, "inpaint_items": [],
           "request": {"prompt": "p"}, "priority": 1, "created_at": store.clock(), "attempts": 0,
           "cancel_requested": False}
    row.update(over)
    return store.create_task(row)[0]


def test_migrations_from_an_empty_database(tmp_path):
    path = tmp_path / "empty.db"
    engine = sqlite_engine(path)
    assert migrate(engine) == [name for name, _ in MIGRATIONS]
    assert migrate(engine) == []  # a second start applies nothing
    tables = set(inspect(engine).get_table_names())
    assert {"users", "tokens", "tasks", "generations", "idempotency_keys", "schema_migrations"} <= tables
    with engine.connect() as conn:
        assert applied(conn) == [name for name, _ in MIGRATIONS]
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_migrating_a_database_made_by_the_first_step(tmp_path):
    engine = sqlite_engine(tmp_path / "old.db")
    migrate(engine)
    with engine.begin() as conn:  # back to how 0001 alone left databases before 0002 existed
        conn.exec_driver_sql("DROP INDEX ix_tasks_status_finished")
        conn.exec_driver_sql("DELETE FROM schema_migrations WHERE name != '0001_initial'")
    assert migrate(engine) == [name for name, _ in MIGRATIONS[1:]]
    assert "ix_tasks_status_finished" in {i["name"] for i in inspect(engine).get_indexes("tasks")}


def test_claim_takes_oldest_and_leases_it(store):
    user = store.create_user("u")
    first, second = _task(store, user["id"]), _task(store, user["id"])
    claim = store.claim("w1", lease_seconds=30, max_attempts=3)
    assert claim.task["id"] == first["id"] and claim.task["attempts"] == 1
    row = store.task(first["id"])
    assert row["status"] == "running" and row["lease_owner"] == "w1" and row["lease_expires"] == store.clock() + 30
    assert store.claim("w2", 30, 3).task["id"] == second["id"]
    assert store.claim("w3", 30, 3) is None


def test_expired_lease_is_taken_again_and_old_owner_cannot_finish(store):
    user = store.create_user("u")
    task = _task(store, user["id"])
    dead = store.claim("w1", 30, 3)
    store.clock.now += 31
    alive = store.claim("w2", 30, 3)
    assert alive.task["id"] == task["id"] and alive.task["attempts"] == 2
    assert store.renew(dead, 30) == (False, False)
    assert not store.finish(dead, "succeeded")
    assert store.finish(alive, "succeeded")
    assert store.task(task["id"])["status"] == "succeeded"
    assert not store.finish(alive, "succeeded")  # only once


def test_renewal_keeps_the_lease(store):
    user = store.create_user("u")
    _task(store, user["id"])
    claim = store.claim("w1", 30, 3)
    for _ in range(5):
        store.clock.now += 20
        assert store.renew(claim, 30) == (True, False)
    assert store.claim("w2", 30, 3) is None


def test_attempts_are_bounded(store):
    user = store.create_user("u")
    task = _task(store, user["id"])
    for _ in range(3):
        assert store.claim("w", 10, 3) is not None
        store.clock.now += 11
    assert store.claim("w", 10, 3) is None
    row = store.task(task["id"])
    assert row["status"] == "failed" and "interrupted 3 times" in row["failure_reason"]
    draft = store.generations_for([task["id"]])[task["id"]]
    assert [d["kind"] for d in draft] == ["sora_error"] and "interrupted" in draft[0]["reason_str"]


def test_release_hands_back_without_counting(store):
    user = store.create_user("u")
    task = _task(store, user["id"])
    claim = store.claim("w", 30, 3)
    assert store.release(claim)
    row = store.task(task["id"])
    assert row["status"] == "queued" and row["attempts"] == 0 and row["lease_owner"] is None


def test_cancel_flag_reaches_the_lease_holder(store):
    user = store.create_user("u")
    task = _task(store, user["id"])
    claim = store.claim("w", 30, 3)
    assert store.request_cancel(task["id"], user["id"])["status"] == "running"
    assert store.renew(claim, 30) == (True, True)


def test_pending_window(store):
    user = store.create_user("u")
    done = _task(store, user["id"])
    store.finish(store.claim("w", 30, 3), "succeeded")
    active = _task(store, user["id"])
    assert {t["id"] for t in store.pending(user["id"], 300)} == {done["id"], active["id"]}
    store.clock.now += 301
    assert [t["id"] for t in store.pending(user["id"], 300)] == [active["id"]]
    assert [t["id"] for t in store.pending(user["id"], 0)] == [active["id"]]


def test_migrating_a_database_at_step_0003_adds_the_spritesheet_column(tmp_path):
    store = open_store(tmp_path / "old.db")  # migrated to the end
    user = store.create_user("u")
    task = _task(store, user["id"])
    engine = sqlite_engine(tmp_path / "old.db")
    with engine.begin() as conn:  # back to how 0003 left databases: no spritesheet_file yet
        conn.exec_driver_sql("ALTER TABLE generations DROP COLUMN spritesheet_file")
        conn.exec_driver_sql("DELETE FROM schema_migrations WHERE name > '0003_uploads'")
        # a draft made before the upgrade
        conn.exec_driver_sql("INSERT INTO generations (id, task_id, user_id, kind, created_at, meta) "
                             f"VALUES ('gen_old', '{task['id']}', '{user['id']}', 'sora_draft', 1.0, '{{}}')")
    assert migrate(engine)[0] == "0004_generations_spritesheet"
    assert [name for name, _ in MIGRATIONS[:4]] == [
        "0001_initial", "0002_tasks_status_finished_index", "0003_uploads", "0004_generations_spritesheet"]
    assert "spritesheet_file" in {c["name"] for c in inspect(engine).get_columns("generations")}
    assert store.generation("gen_old")["spritesheet_file"] is None  # older drafts simply have none
    assert migrate(engine) == []


def test_a_retried_task_keeps_the_progress_it_reached(store):
    user = store.create_user("u")
    task = _task(store, user["id"])
    first = store.claim("w1", 30, 3)
    assert first.task["progress"] == 0.0  # a first attempt starts from nothing
    assert store.set_progress(first, 0.42)
    store.clock.now += 31  # w1 died
    second = store.claim("w2", 30, 3)
    assert second.task["attempts"] == 2 and second.task["progress"] == 0.42
    assert store.task(task["id"])["progress"] == 0.42


def test_a_retried_attempt_stalls_rather_than_drops(store, monkeypatch):
    """The worker's TaskContext never publishes less than what an earlier attempt reached."""
    import threading
    from types import SimpleNamespace

    from sorakit.worker import worker

    monkeypatch.setattr(worker, "PROGRESS_INTERVAL", 0.0)  # every update is written
    user = store.create_user("u")
    task = _task(store, user["id"], n_frames=10)
    store.set_progress(store.claim("w1", 30, 3), 0.42)
    store.clock.now += 31
    claim = store.claim("w2", 30, 3)
    services = SimpleNamespace(store=store)
    ctx = worker.TaskContext(services, claim, worker.Heartbeat(services, claim, threading.Event()), 0.0)
    seen = []
    for frame in range(1, 11):
        ctx.on_frame(frame)
        seen.append(store.task(task["id"])["progress"])
    assert seen[:4] == [0.42] * 4 and seen[4] == 0.5  # stalls at 0.42 until the retry passes it
    assert seen == sorted(seen) and seen[-1] == 0.99


def test_a_worker_claims_only_the_engines_it_has(store):
    user = store.create_user("u")
    wan = _task(store, user["id"], engine="wan-1.3b")
    preview = _task(store, user["id"])
    assert store.claim("gpu", 30, 3, engines=["ltx"]) is None
    assert store.claim("gpu", 30, 3, engines=[]) is None
    assert store.claim("gpu", 30, 3, engines=["wan-1.3b"]).task["id"] == wan["id"]
    assert store.claim("cpu", 30, 3, engines=["preview", "ltx"]).task["id"] == preview["id"]
    # a lapsed lease goes to a worker with that engine, and only to one
    store.clock.now += 31
    assert store.claim("cpu", 30, 3, engines=["preview"]).task["id"] == preview["id"]
    assert store.claim("gpu2", 30, 3, engines=["wan-1.3b"]).task["id"] == wan["id"]


def test_claimers_at_once_take_each_task_exactly_once(store):
    """Eight threads with their own connections claim from one queue: no task is taken twice and
    none is left (on PostgreSQL through SKIP LOCKED, on SQLite through the write lock)."""
    import threading

    user = store.create_user("u")
    made = {_task(store, user["id"])["id"] for _ in range(60)}
    taken: list[str] = []
    lock = threading.Lock()

    def claimer(i: int) -> None:
        while (claim := store.claim(f"w{i}", 30, 3)) is not None:
            with lock:
                taken.append(claim.task["id"])
            assert store.finish(claim, "succeeded")

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(taken) == sorted(made)
    assert {store.task(t)["status"] for t in made} == {"succeeded"}


def test_the_workers_table_follows_each_worker(store):
    row = {"name": "gpu-a/0", "host": "gpu-a", "pid": 42, "version": "0.1.0", "engines": ["wan-1.3b"],
           "device": "NVIDIA H200 (cuda:0)"}
    store.register_worker(row)
    store.clock.now += 5
    assert store.worker_seen("gpu-a/0", current_task="task_x")
    assert store.worker_seen("gpu-a/0", current_task=None, done=1)
    (seen,) = store.workers()
    assert seen["engines"] == ["wan-1.3b"] and seen["last_seen"] == store.clock()
    assert seen["current_task"] is None and seen["tasks_done"] == 1 and seen["stopped_at"] is None
    store.worker_stopped("gpu-a/0")
    assert store.workers()[0]["stopped_at"] == store.clock()
    store.register_worker(row)  # the same worker started again: a fresh row
    assert store.workers()[0]["stopped_at"] is None and store.workers()[0]["tasks_done"] == 0
    assert not store.worker_seen("nobody")
    store.clock.now += 100
    assert store.forget_workers(store.clock() - 50) == 1 and store.workers() == []


def test_a_shared_value_is_made_once(store):
    made = []

    def make():
        made.append(len(made))
        return f"value-{len(made)}"

    assert store.shared_value("k", make) == "value-1"
    assert store.shared_value("k", make) == "value-1" and made == [0]


def test_postgresql_migrations_from_empty_with_nodes_starting_at_once(pg_url):
    """Four processes open one empty PostgreSQL database at once: every step is applied once, by
    one of them, under the advisory lock; the others find it done."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from sorakit.store.db import postgres_engine; "
            "from sorakit.store.migrations import migrate; "
            "print(json.dumps(migrate(postgres_engine(sys.argv[1]))))")
    procs = [subprocess.Popen([sys.executable, "-c", code, pg_url], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    applied_now = sorted(name for out in outs for name in out)
    assert applied_now == sorted(name for name, _ in MIGRATIONS)
    engine = open_store(pg_url).engine
    assert {"users", "tasks", "workers", "shared_values"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert applied(conn) == [name for name, _ in MIGRATIONS]
    engine.dispose()


def test_sign_in_failures_counted_from_many_connections_at_once(database):
    """Eight stores (as eight API nodes) count failures of one key at once: every one is counted,
    none fails (on PostgreSQL the key is locked before its row is read)."""
    import threading

    stores = [open_store(database) for _ in range(8)]

    def count(found, now):
        row = found["ip:203.0.113.9"]
        return {"ip:203.0.113.9": {"count": (row["count"] if row else 0) + 1,
                                   "first_at": row["first_at"] if row else now, "locked_until": None}}

    errors = []

    def fail_once(store):
        try:
            store.change_signin_failures(["ip:203.0.113.9"], count, window=3600)
        except Exception as exc:  # noqa: BLE001 - the test reports any
            errors.append(exc)

    threads = [threading.Thread(target=fail_once, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    from sorakit.store.schema import signin_failures
    from sqlalchemy import select

    with stores[0].engine.connect() as conn:
        assert conn.execute(select(signin_failures.c.count)).scalar_one() == 8
    for s in stores:
        s.engine.dispose()


def test_deleting_a_task_while_its_worker_commits(database):
    """The delete and the worker's commit, at once, many times: each time either the task is gone
    with no draft left behind, or the delete came first and the worker recorded nothing."""
    import threading

    store = open_store(database)
    other = open_store(database)
    user = store.create_user("u")
    for _ in range(20):
        task = _task(store, user["id"])
        claim = store.claim("w", 30, 3)
        gen = {"id": f"gen_{task['id'][5:]}", "task_id": task["id"], "user_id": user["id"], "kind": "sora_draft",
               "created_at": store.clock(), "width": 1, "height": 1, "n_frames": 1, "video_file": None,
               "thumbnail_file": None, "spritesheet_file": None, "video_bytes": None, "reason_str": None,
               "error_reason": None, "meta": {}}
        results = {}
        go = threading.Barrier(2)

        def commit():
            go.wait()
            results["finish"] = store.finish(claim, "succeeded", generation=gen)

        def remove():
            go.wait()
            results["delete"] = other.delete_task(task["id"], user["id"])

        threads = [threading.Thread(target=commit), threading.Thread(target=remove)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert "finish" in results and "delete" in results, results
        assert store.task(task["id"]) is None
        assert store.generation(gen["id"]) is None
    store.engine.dispose()
    other.engine.dispose()


def test_on_postgresql_every_machine_keeps_the_databases_time(pg_url):
    """Two stores on one database, one on a machine whose clock runs 31 s ahead (more than a
    lease): both stamp and judge leases on the database's clock, so the fast one cannot take a
    task whose lease the other keeps renewing."""
    import time

    from sorakit.store.db import DatabaseClock

    honest = open_store(pg_url)
    fast = open_store(pg_url)
    fast.clock = DatabaseClock(fast.engine, local=lambda: time.time() + 31.0)
    assert abs(fast.clock() - honest.clock()) < 1.0  # both are the database's time
    assert abs(fast.clock.offset + 31.0) < 1.0
    user = honest.create_user("u")
    _task(honest, user["id"], created_at=honest.clock())
    claim = honest.claim("slow-clock", 30, 3)
    assert honest.renew(claim, 30) == (True, False)
    assert fast.claim("fast-clock", 30, 3) is None  # the lease is alive on the database's clock
    # and an unreachable database keeps the last offset rather than failing the caller
    fast.clock.engine = None
    fast.clock._synced_at = 0.0
    assert abs(fast.clock() - time.time()) < 1.0
    honest.engine.dispose()
    fast.engine.dispose()
