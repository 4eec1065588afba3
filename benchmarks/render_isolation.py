"""Benchmark: polls while videos render, with workers as processes (the default) and as threads.

For each worker mode, a real ``sorakit serve`` on 127.0.0.1 (preview engine) with 10,000 finished
tasks of one user in its database:

1. poll latency of ``GET /backend/nf/pending/v2`` from 50 concurrent pollers, with nothing
   rendering: p50 and p99 (the baseline);
2. the same while one 10 s 352x640 preview video is created every second and rendered;
3. drain throughput: 8 videos of 5 s with 1 worker, then with ``--max-workers`` workers.

Prints p99 under renders as a ratio of the idle p50 (target: at most 3x), and the throughput ratio.
The load generator is one asyncio process (httpx2), so its own GIL does not queue the pollers.

Run:  .venv/bin/python benchmarks/render_isolation.py [--seconds 15] [--max-workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]
POLLERS = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed_tasks(data_dir: Path, n: int) -> None:
    """n finished tasks of user ``local`` straight into the store (no rendering)."""
    sys.path.insert(0, str(ROOT / "src"))
    from sorakit.config import load_settings
    from sorakit.server.services import build_services

    services = build_services(load_settings({"data_dir": data_dir}, env={}), engines={})
    store = services.store
    user = store.user_by_name("local")
    now = time.time() - 3600
    from sorakit.store.schema import tasks

    rows = [{"id": f"task_seed{i:021d}", "user_id": user["id"], "status": "succeeded", "prompt": f"seed {i}",
             "title": None, "model": "sy_8", "engine": "preview", "orientation": "portrait", "size": "small",
             "n_frames": 30, "width": 352, "height": 640, "fps": 30, "seed": i, "style_id": None,
             "inpaint_items": [], "request": {}, "priority": 1, "progress": 1.0, "failure_reason": None,
             "created_at": now - i, "started_at": now - i, "finished_at": now - i, "attempts": 1,
             "cancel_requested": False, "operation": "generate", "inputs": None, "n_variants": 1}
            for i in range(n)]
    with store.engine.begin() as conn:
        conn.execute(tasks.insert(), rows)


class Server:
    def __init__(self, data_dir: Path, mode: str, workers: int) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SORAKIT_")}
        env.update(SORAKIT_DATA_DIR=str(data_dir), SORAKIT_WORKER_MODE=mode, SORAKIT_WORKERS=str(workers),
                   SORAKIT_DEFAULT_CONCURRENCY="1000", SORAKIT_DEFAULT_DAILY_LIMIT="100000",
                   SORAKIT_FINISHED_WINDOW_SECONDS="15")
        self.proc = subprocess.Popen([sys.executable, "-m", "sorakit", "serve", "--port", str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx2.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        self.token = (data_dir / "local.token").read_text().strip()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


async def poll_latencies(server: Server, seconds: float, creating: bool) -> list[float]:
    headers = {"Authorization": f"Bearer {server.token}"}
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    async with httpx2.AsyncClient(base_url=server.url, headers=headers, timeout=30,
                                  limits=httpx2.Limits(max_connections=POLLERS + 4)) as client:
        async def poller() -> None:
            while time.monotonic() < stop_at:
                start = time.perf_counter()
                r = await client.get("/backend/nf/pending/v2")
                r.raise_for_status()
                latencies.append(time.perf_counter() - start)

        async def creator() -> None:
            while creating and time.monotonic() < stop_at:
                await client.post("/backend/nf/create", json={"prompt": "a storm at sea", "n_frames": 300})
                await asyncio.sleep(1.0)

        await asyncio.gather(creator(), *(poller() for _ in range(POLLERS)))
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def drain(server: Server, count: int) -> float:
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx2.Client(base_url=server.url, headers=headers, timeout=30) as client:
        start = time.perf_counter()
        ids = [client.post("/backend/nf/create", json={"prompt": f"drain {i}", "n_frames": 150}).json()["id"]
               for i in range(count)]
        while True:
            states = [client.get(f"/backend/nf/tasks/{i}/v2").json()["status"] for i in ids]
            if all(s in ("succeeded", "failed") for s in states):
                return time.perf_counter() - start
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--max-workers", type=int, default=min(os.cpu_count() or 2, 3))
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; {args.tasks} finished tasks; {POLLERS} pollers; {args.seconds:g} s per phase")
    for mode in ("process", "thread"):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            first = Server(data, mode, 1)  # makes user local and the database
            first.stop()
            seed_tasks(data, args.tasks)
            server = Server(data, mode, 1)
            try:
                idle = asyncio.run(poll_latencies(server, args.seconds, creating=False))
                busy = asyncio.run(poll_latencies(server, args.seconds, creating=True))
            finally:
                server.stop()
            p50 = statistics.median(idle)
            print(f"{mode:>8} workers: idle p50 {p50 * 1000:6.1f} ms p99 {pct(idle, 0.99) * 1000:6.1f} ms "
                  f"({len(idle) / args.seconds:5.0f}/s); rendering p50 {statistics.median(busy) * 1000:6.1f} ms "
                  f"p99 {pct(busy, 0.99) * 1000:6.1f} ms ({len(busy) / args.seconds:5.0f}/s): "
                  f"p99 = {pct(busy, 0.99) / p50:4.1f}x idle p50")
    with tempfile.TemporaryDirectory() as tmp:
        times = {}
        for n in (1, args.max_workers):
            server = Server(Path(tmp) / f"w{n}", "process", n)
            try:
                times[n] = drain(server, 8)
            finally:
                server.stop()
        print(f"drain 8 x 5 s videos: 1 worker {times[1]:.1f} s, {args.max_workers} workers "
              f"{times[args.max_workers]:.1f} s: {times[1] / times[args.max_workers]:.2f}x the throughput")


if __name__ == "__main__":
    main()
