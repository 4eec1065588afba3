"""Issue 8, item 9: the default finished-task window serves every kind of pending/v2 client.

Three real polling schedules run at once against a real server with default settings:

- the seed's script: polls every 10 s and needs to see ``succeeded`` in the list at least once;
- a live-service client: polls every 2 s and waits for the task to *leave* the list;
- a slow live-service client: first poll 30 s after create, then every 60 s, waiting for it to be
  gone (a rule like "listed until seen once" would cost it a further minute).

Each must learn of completion promptly, and find the video (in the list or in the drafts).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

try:
    from serverproc import ServerProcess
except ImportError:  # pragma: no cover
    from tests.serverproc import ServerProcess

pytestmark = pytest.mark.slow


def _listed(server, task_id: str) -> dict | None:
    tasks = server.request("GET", "/backend/nf/pending/v2").json()
    return next((t for t in tasks if t["id"] == task_id), None)


def _create(server, prompt: str) -> tuple[str, float]:
    r = server.request("POST", "/backend/nf/create", json={"prompt": prompt, "n_frames": 30})
    assert r.status_code == 200, r.text
    return r.json()["id"], time.monotonic()


def _in_drafts(server, task_id: str) -> bool:
    items = server.request("GET", "/backend/project_y/profile/drafts").json()["items"]
    return any(d["task_id"] == task_id and d["url"] for d in items)


def seed_script(server) -> float:
    """Poll every 10 s until the task shows succeeded with a URL (the seed's own loop)."""
    task_id, start = _create(server, "seed script")
    while True:
        time.sleep(10)
        task = _listed(server, task_id)
        assert task is not None, "the finished task left the list before a 10 s poller saw it"
        if task["status"] == "succeeded":
            assert requests.get(task["generations"][0]["url"], timeout=10).status_code == 200
            return time.monotonic() - start


def leave_watcher(server, first: float, every: float) -> tuple[float, float]:
    """Wait for the task to leave the list, then find it in the drafts.
    Returns (seconds from create, seconds from the server's finish to the client knowing)."""
    task_id, start = _create(server, f"leave watcher {first}")
    time.sleep(first)
    while _listed(server, task_id) is not None:
        time.sleep(every)
    known = time.monotonic()
    assert _in_drafts(server, task_id)
    finished_at = server.request("GET", f"/backend/nf/tasks/{task_id}/v2").json()["finished_at"]
    return known - start, time.time() - finished_at - (time.monotonic() - known)


def test_the_default_window_serves_all_three_schedules(tmp_path):
    with ServerProcess(tmp_path / "data") as server:
        with ThreadPoolExecutor(3) as pool:
            seed = pool.submit(seed_script, server)
            fast = pool.submit(leave_watcher, server, 2.0, 2.0)
            slow = pool.submit(leave_watcher, server, 30.0, 60.0)
            seed_s, (fast_s, fast_lag), (slow_s, _) = seed.result(), fast.result(), slow.result()
    assert seed_s < 25, f"the seed script took {seed_s:.0f} s"
    assert fast_lag < 20 and fast_s < 30, f"the 2 s poller knew {fast_lag:.0f} s after the finish"
    assert slow_s < 35, f"the 30 s/60 s poller took {slow_s:.0f} s (one extra minute means it was listed)"
