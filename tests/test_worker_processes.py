"""``sorakit serve`` renders in ``sorakit worker`` child processes, never in its own: a dead child
is restarted and its task finished by another attempt; children never outlive their server."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from serverproc import ServerProcess


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc: no psutil needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def create(server: ServerProcess, **body) -> str:
    r = server.request("POST", "/backend/nf/create", json={"prompt": "a kite", "n_frames": 30, **body}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def task(server: ServerProcess, task_id: str) -> dict:
    return server.request("GET", f"/backend/nf/tasks/{task_id}/v2", timeout=10).json()


def test_serve_renders_in_worker_processes_and_restarts_a_dead_one(tmp_path):
    env = {"SORAKIT_WORKERS": "2", "SORAKIT_LEASE_SECONDS": "2", "SORAKIT_PREVIEW_PACE": "3"}
    with ServerProcess(tmp_path / "data", env=env) as server:
        workers = wait_for(lambda: len(children(server.pid)) == 2 and children(server.pid), 20, "2 workers")
        # rendering yields the CPU to the API on the machine they share (worker_nice, 10 by default)
        api_nice = os.getpriority(os.PRIO_PROCESS, server.pid)
        wait_for(lambda: all(os.getpriority(os.PRIO_PROCESS, w) == min(api_nice + 10, 19) for w in workers), 10,
                 "the workers' lower priority")
        task_id = create(server)
        running = wait_for(lambda: task(server, task_id)["status"] == "running", 10, "the task to run")
        assert running
        log = server.log_text()
        owner = wait_for(lambda: next((pid for pid in workers if f":{pid}:w" in server.log_text()), None), 10,
                         "the worker's log line")
        assert f":{server.pid}:w" not in log  # the API process itself never took a task
        os.kill(owner, signal.SIGKILL)  # mid-task
        # the other worker (or the restarted one) takes the task once its lease runs out
        done = wait_for(lambda: (t := task(server, task_id))["status"] in ("succeeded", "failed") and t, 30,
                        "the task to finish")
        assert done["status"] == "succeeded", done
        replaced = wait_for(lambda: len(children(server.pid)) == 2 and owner not in children(server.pid)
                            and children(server.pid), 20, "a replacement worker")
        assert owner not in replaced
        assert "exited with -9; restarting" in server.log_text()


def test_workers_hand_their_task_back_on_stop_and_never_outlive_a_killed_server(tmp_path):
    env = {"SORAKIT_WORKERS": "1", "SORAKIT_PREVIEW_PACE": "30"}
    server = ServerProcess(tmp_path / "data", env=env).start()
    try:
        worker = wait_for(lambda: children(server.pid), 20, "a worker")[0]
        task_id = create(server)
        wait_for(lambda: task(server, task_id)["status"] == "running", 10, "the task to run")
        # only the server is stopped (not its group): it must stop its worker itself
        os.kill(server.pid, signal.SIGTERM)
        server.proc.wait(20)
        wait_for(lambda: not Path(f"/proc/{worker}").exists() or
                 Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 10, "the worker to exit")
    finally:
        server.kill()
    # the task went back to the queue without spending an attempt, and runs on the next start
    with ServerProcess(tmp_path / "data", env={"SORAKIT_WORKERS": "1"}) as again:
        done = wait_for(lambda: (t := task(again, task_id))["status"] == "succeeded" and t, 30, "the task")
        assert done["status"] == "succeeded"
        kept = wait_for(lambda: children(again.pid), 20, "a worker")[0]
        os.kill(again.pid, signal.SIGKILL)  # no chance to stop anything
        wait_for(lambda: not Path(f"/proc/{kept}").exists() or
                 Path(f"/proc/{kept}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 10,
                 "the orphaned worker to exit")
