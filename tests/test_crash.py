"""Crash safety over real processes: SIGKILL and SIGTERM a ``sorakit serve`` mid-task, restart it
on the same data directory, and check that every task ends exactly once, with at most one draft,
and that a killed attempt leaves nothing a client could ever list or download.

Each server runs with a 2 s lease and ``--preview-pace 6``, so a 300-frame preview takes at least
6 s: long enough to be caught running.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from sorakit.media.encode import probe

try:
    from serverproc import ServerProcess
except ImportError:  # tests/ made a package
    from tests.serverproc import ServerProcess

pytestmark = pytest.mark.slow

LEASE = 2
PACE = ["--preview-pace", "6"]
CRASH_ENV = {"SORAKIT_LEASE_SECONDS": str(LEASE)}


@pytest.fixture
def servers():
    """Start servers with ``servers(data_dir, env)``; every one is stopped at the end, whatever happens."""
    started: list[ServerProcess] = []

    def start(data_dir: Path, env: dict[str, str] | None = None) -> ServerProcess:
        proc = ServerProcess(data_dir, env={**CRASH_ENV, **(env or {})}, args=PACE)
        started.append(proc)
        return proc.start()

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


@contextmanager
def database(data_dir: Path):
    conn = sqlite3.connect(f"file:{data_dir / 'sorakit.db'}?mode=ro", uri=True, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def db_task(data_dir: Path, task_id: str) -> dict:
    with database(data_dir) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT status, attempts, progress, lease_owner, failure_reason FROM tasks "
                           "WHERE id = ?", (task_id,)).fetchone()
    assert row is not None, task_id
    return dict(row)


def db_generations(data_dir: Path, task_id: str) -> list[str]:
    with database(data_dir) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM generations WHERE task_id = ?", (task_id,))]


def create(server: ServerProcess) -> str:
    reply = server.request("POST", "/backend/nf/create",
                           json={"kind": "video", "prompt": "a lighthouse in a storm", "n_frames": 300})
    assert reply.status_code == 200, f"{reply.text}\n{server.log_tail()}"
    return reply.json()["id"]


def task(server: ServerProcess, task_id: str) -> dict:
    reply = server.request("GET", f"/backend/nf/tasks/{task_id}/v2")
    assert reply.status_code == 200, reply.text
    return reply.json()


def wait_running(server: ServerProcess, task_id: str, attempt: int, timeout: float = 20.0) -> None:
    """Until attempt number ``attempt`` runs and has made progress, as ``pending/v2`` shows it.

    A restarted server still shows the killed attempt's progress until its lease runs out and the
    task is claimed again, so the attempt count is read from the database first.
    """
    deadline = time.monotonic() + timeout
    while True:
        row = db_task(server.data_dir, task_id)
        if row["attempts"] == attempt:
            pending = server.request("GET", "/backend/nf/pending/v2").json()
            mine = next((t for t in pending if t["id"] == task_id), None)
            if mine and mine["status"] == "running" and (mine["progress_pct"] or 0) > 0:
                return
        assert row["attempts"] <= attempt, row
        assert time.monotonic() < deadline, f"attempt {attempt} never ran: {row}\n{server.log_tail()}"
        time.sleep(0.1)


def wait_finished(server: ServerProcess, task_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = task(server, task_id)
        if found["status"] in ("succeeded", "failed", "cancelled"):
            return found
        assert time.monotonic() < deadline, f"task still {found['status']}: {found}\n{server.log_tail()}"
        time.sleep(0.2)


def videos_on_disk(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "media").glob("gen_*/video.mp4"))


def drafts(server: ServerProcess) -> list[dict]:
    reply = server.request("GET", "/backend/project_y/profile/drafts", params={"limit": 500})
    assert reply.status_code == 200, reply.text
    return reply.json()["items"]


def assert_killed_attempt_left_nothing(data_dir: Path, task_id: str) -> None:
    assert db_generations(data_dir, task_id) == []
    assert videos_on_disk(data_dir) == []
    leftovers = [p.relative_to(data_dir / "media") for p in (data_dir / "media").rglob("*") if p.is_file()]
    assert all(p.parts[0] == "tmp" for p in leftovers), leftovers


def test_sigkill_mid_task_reruns_it_once_after_restart(servers, tmp_path):
    data = tmp_path / "data"
    first = servers(data)
    task_id = create(first)
    wait_running(first, task_id, attempt=1)

    first.kill()
    killed_at = time.monotonic()
    assert first.proc.returncode == -signal.SIGKILL
    assert_killed_attempt_left_nothing(data, task_id)
    assert db_task(data, task_id)["status"] == "running"  # as the dead worker left it

    second = servers(data)
    # taken again as soon as the dead worker's lease runs out (startup included)
    wait_running(second, task_id, attempt=2, timeout=max(LEASE + 15 - (time.monotonic() - killed_at), 1))
    done = wait_finished(second, task_id, timeout=40)
    assert done["status"] == "succeeded", done

    assert db_task(data, task_id)["attempts"] == 2
    assert len(done["generations"]) == 1, done["generations"]
    gen = done["generations"][0]
    listed = drafts(second)
    assert [d["id"] for d in listed if d["task_id"] == task_id] == [gen["id"]]
    assert db_generations(data, task_id) == [gen["id"]]

    reply = requests.get(gen["url"], timeout=30)
    assert reply.status_code == 200, reply.text[:300]
    video = tmp_path / "video.mp4"
    video.write_bytes(reply.content)
    info = probe(video)
    assert (info.n_frames, info.width, info.height) == (300, 352, 640), info

    # nothing the killed attempt made ended up as a (listed or unlisted) generation directory
    on_disk = {p.name for p in (data / "media").glob("gen_*")}
    assert on_disk == {d["id"] for d in listed}, on_disk


def test_repeated_sigkill_gives_the_task_up(servers, tmp_path):
    data = tmp_path / "data"
    env = {"SORAKIT_MAX_ATTEMPTS": "2"}
    first = servers(data, env)
    task_id = create(first)
    wait_running(first, task_id, attempt=1)
    first.kill()
    assert_killed_attempt_left_nothing(data, task_id)

    second = servers(data, env)
    wait_running(second, task_id, attempt=2)
    second.kill()
    assert_killed_attempt_left_nothing(data, task_id)

    third = servers(data, env)
    done = wait_finished(third, task_id, timeout=20)
    assert done["status"] == "failed", done
    assert "interrupted" in (done["failure_reason"] or ""), done
    assert db_task(data, task_id)["attempts"] == 2  # given up, not tried a third time
    assert not [g for g in done["generations"] if g.get("kind") == "sora_draft"], done["generations"]
    assert not [d for d in drafts(third) if d["task_id"] == task_id and d["kind"] == "sora_draft"]
    assert videos_on_disk(data) == []


def test_sigterm_hands_the_task_back_without_spending_an_attempt(servers, tmp_path):
    data = tmp_path / "data"
    first = servers(data)
    task_id = create(first)
    wait_running(first, task_id, attempt=1)

    code = first.stop(timeout=15)
    assert not first.stop_escalated and code in (0, -signal.SIGTERM), (code, first.log_tail())
    assert "Application shutdown complete" in first.log_text(), first.log_tail()
    assert "released on shutdown" in first.log_text(), first.log_tail()
    row = db_task(data, task_id)
    assert (row["status"], row["attempts"], row["lease_owner"]) == ("queued", 0, None), row
    assert_killed_attempt_left_nothing(data, task_id)

    second = servers(data)
    done = wait_finished(second, task_id, timeout=30)
    assert done["status"] == "succeeded", done
    assert db_task(data, task_id)["attempts"] == 1
    assert len(done["generations"]) == 1
    assert [d["task_id"] for d in drafts(second)] == [task_id]
    assert len(videos_on_disk(data)) == 1
