"""A fleet on one machine: API nodes and workers as separate processes with separate data
directories, sharing nothing but a PostgreSQL database (a throwaway cluster, tests/pg.py) and an
S3 bucket (moto's server on 127.0.0.1).

- tasks created on API node A are rendered by worker W, listed on node B and downloaded through
  the bucket's presigned links;
- a worker SIGKILLed mid-task: its lease runs out and another worker runs the task, once;
- four worker processes and 200 tasks: every task runs exactly once;
- a user's quota holds across two API nodes taking creates in parallel.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import requests

from conftest import wait_for
from serverproc import ServerProcess
from sorakit.config import load_settings
from sorakit.ids import new_id
from sorakit.server import auth
from sorakit.server.secrets import derive, shared_master_secret
from sorakit.store import open_store

pytestmark = pytest.mark.slow

BUCKET = "sorakit-fleet"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def bucket(monkeypatch):
    """An S3-compatible server on 127.0.0.1 with one empty bucket; yields its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


class Fleet:
    """The settings every node shares (the database and the bucket), and its processes."""

    def __init__(self, root: Path, database_url: str, endpoint: str) -> None:
        self.root, self.database_url, self.endpoint = root, database_url, endpoint
        self.env = {**AWS, "SORAKIT_DATABASE_URL": database_url, "SORAKIT_MEDIA": f"s3://{BUCKET}/videos",
                    "SORAKIT_S3_ENDPOINT_URL": endpoint, "SORAKIT_LEASE_SECONDS": "3"}
        self.procs: list[subprocess.Popen] = []
        self.servers: list[ServerProcess] = []

    def api(self, name: str) -> ServerProcess:
        server = ServerProcess(self.root / name, env=self.env, args=["--workers", "0"]).start()
        self.servers.append(server)
        return server

    def worker(self, name: str, pace: float = 0.0, threads: int = 1) -> subprocess.Popen:
        data = self.root / name
        data.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SORAKIT_")}
        env.update(self.env, SORAKIT_PREVIEW_PACE=str(pace), PYTHONUNBUFFERED="1")
        log = open(data / "worker.log", "wb")  # noqa: SIM115 - the process owns it
        proc = subprocess.Popen([sys.executable, "-m", "sorakit", "worker", "--data-dir", str(data),
                                 "--name", name, "--threads", str(threads)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def store(self):
        return open_store(self.database_url)

    def headers(self, name: str, **limits) -> dict[str, str]:
        """A bearer token minted the way any node would: the fleet's secret lives in the database."""
        store = self.store()
        user = store.user_by_name(name) or store.create_user(name, **limits)
        settings = load_settings({"data_dir": self.root / "admin", "database_url": self.database_url}, env={})
        key = derive(shared_master_secret(settings, store), "jwt")
        token, _ = auth.issue(store, key, user["id"], 3600)
        store.engine.dispose()
        return {"Authorization": f"Bearer {token}"}

    def workers(self, *args: str) -> list[dict]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SORAKIT_")}
        done = subprocess.run([sys.executable, "-m", "sorakit", "workers", "--data-dir", str(self.root / "admin"),
                               "--database-url", self.database_url, "--json", *args],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for server in self.servers:
            server.stop()


@pytest.fixture
def fleet(tmp_path, pg_url, bucket):
    made = Fleet(tmp_path, pg_url, bucket)
    yield made
    made.close()


def _task(server: ServerProcess, headers: dict, task_id: str) -> dict:
    r = requests.get(f"{server.url}/backend/nf/tasks/{task_id}/v2", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_created_on_one_node_rendered_by_a_worker_listed_and_downloaded_on_another(fleet, tmp_path):
    a, b = fleet.api("api-a"), fleet.api("api-b")
    alice = fleet.headers("alice")
    r = requests.post(f"{a.url}/backend/nf/create", headers=alice, timeout=30,
                      json={"prompt": "a lighthouse in fog", "n_frames": 30, "orientation": "landscape"})
    assert r.status_code == 200, r.text
    task_id = r.json()["id"]
    time.sleep(1.0)
    assert _task(b, alice, task_id)["status"] == "queued"  # API-only nodes render nothing
    assert fleet.workers() == []

    # the first worker takes it slowly; it is killed mid-task
    doomed = fleet.worker("gpu-1", pace=30.0)
    wait_for(lambda: _task(b, alice, task_id)["status"] == "running", timeout=60)
    seen = wait_for(lambda: fleet.workers(), timeout=30)
    assert seen[0]["name"] == "gpu-1/w0" and seen[0]["current_task"] in (task_id, None)
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(10)

    # another worker, on another "machine", finishes it once the dead lease runs out
    fleet.worker("gpu-2")
    done = wait_for(lambda: (t := _task(a, alice, task_id))["status"] in ("succeeded", "failed") and t, timeout=90)
    assert done["status"] == "succeeded", done
    store = fleet.store()
    row = store.task(task_id)
    assert row["attempts"] == 2 and row["lease_owner"] is None
    assert len(store.generations_for([task_id])[task_id]) == 1  # one draft: run to the end once
    store.engine.dispose()

    # listed on node B, downloaded from the bucket through a presigned link
    r = requests.get(f"{b.url}/backend/project_y/profile/drafts", headers=alice, timeout=30)
    assert r.status_code == 200
    (draft,) = r.json()["items"]
    url = draft["downloadable_url"]
    assert url.startswith(fleet.endpoint + f"/{BUCKET}/videos/") and "X-Amz-Signature=" in url
    video = requests.get(url, timeout=30)
    assert video.status_code == 200
    path = tmp_path / "got.mp4"
    path.write_bytes(video.content)
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
    # no video bytes on either API node's disk
    for node in ("api-a", "api-b"):
        assert not list((tmp_path / node).rglob("*.mp4"))

    # the fleet as `sorakit workers` shows it: the killed one lost (no clean stop), the other idle
    both = wait_for(lambda: (ws := fleet.workers("--all")) and len(ws) == 2 and ws, timeout=60)
    states = {w["name"]: w for w in both}
    assert states["gpu-2/w0"]["state"] in ("idle", "busy")
    assert states["gpu-1/w0"]["stopped_at"] is None
    wait_for(lambda: {w["name"]: w for w in fleet.workers("--all")}["gpu-2/w0"]["tasks_done"] == 1, timeout=20)


def test_four_workers_run_two_hundred_tasks_exactly_once(fleet):
    store = fleet.store()
    user = store.create_user("bulk")
    now = time.time()
    ids = []
    for i in range(200):
        row = {"id": new_id("task"), "user_id": user["id"], "status": "queued", "prompt": f"tile {i}",
               "title": None, "model": "sy_8", "engine": "preview", "orientation": "portrait", "size": "small",
               "n_frames": 2, "width": 64, "height": 64, "fps": 30, "seed": i, "style_id": None,
               "inpaint_items": [], "request": {"prompt": f"tile {i}"}, "priority": 1, "created_at": now + i * 1e-3,
               "attempts": 0, "cancel_requested": False}
        ids.append(store.create_task(row)[0]["id"])
    for n in range(4):
        fleet.worker(f"cpu-{n}")

    def finished():
        rows = [store.task(t) for t in ids]
        return all(r["status"] in ("succeeded", "failed") for r in rows) and rows

    rows = wait_for(finished, timeout=300, every=1.0)
    assert {r["status"] for r in rows} == {"succeeded"}
    assert {r["attempts"] for r in rows} == {1}  # nobody took a task someone else held
    drafts = store.generations_for(ids)
    assert all(len(drafts[t]) == 1 for t in ids)
    owners = {}
    for proc in fleet.procs:
        proc.send_signal(signal.SIGTERM)
    for proc in fleet.procs:
        proc.wait(30)
    for w in store.workers():
        owners[w["name"]] = w["tasks_done"]
    assert sum(owners.values()) == 200 and len(owners) == 4
    assert min(owners.values()) > 0  # all four shared the work
    store.engine.dispose()


def test_quota_holds_across_two_api_nodes(fleet):
    a, b = fleet.api("api-a"), fleet.api("api-b")
    carol = fleet.headers("carol", concurrency=5, daily=7)

    def create(i: int) -> int:
        server = (a, b)[i % 2]
        r = requests.post(f"{server.url}/backend/nf/create", headers=carol, timeout=60,
                          json={"prompt": f"parallel create {i}", "n_frames": 10})
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(create, range(24)))
    # no workers run: every accepted task stays active, so the concurrency limit of 5 binds
    assert codes.count(200) == 5 and codes.count(429) == 19, codes
    store = fleet.store()
    assert store.count_active(store.user_by_name("carol")["id"]) == 5
    store.engine.dispose()
