"""Benchmark (issue 2): ``GET /backend/nf/pending/v2`` requests per second with 10,000 tasks in the
store and 50 concurrent pollers, as a ratio to ``GET /healthz`` on the same server in the same run.

What it does:

1. Builds a data dir in a temporary directory and fills its store directly (one SQLAlchemy Core
   transaction): ``--users`` users, most tasks finished long ago and spread over all of them, and
   for each of the ``--polling-users`` a realistic handful of live ones (1 running, 2 queued, 2
   finished within the server's ``finished_window_seconds``). Issues a token per polling user.
2. Starts a real uvicorn server on 127.0.0.1 (free port) in a subprocess, with ``workers=0`` so
   nothing changes the store while it is measured, and waits for ``/healthz``. With
   ``--servers N``, N such servers on the same data dir (N API processes on one database); the
   pollers are spread over them evenly and the server CPU is their sum.
3. Runs ``--pollers`` concurrent pollers (asyncio + one ``httpx2.AsyncClient`` with a pool of that
   many connections), each in a tight loop for ``--seconds`` per phase, poller *i* using the token
   of polling user *i mod polling-users* (and server *i mod servers*). Phases: warm-up (both
   endpoints), /healthz, pending/v2, /healthz again; the two /healthz phases are averaged for the
   ratio.

It prints the store mix, one pending/v2 response's size and task count, and a table of requests/s,
latency p50/p95, errors (any non-200 or transport error) and the CPU used by server and load
generator in each phase (both share this machine's cores, so a generator near 100% of one core
means the figure is bounded by the client, not the server). No assertions on timing.

Run:  .venv/bin/python benchmarks/pending_poll.py --seconds 5
      .venv/bin/python benchmarks/pending_poll.py --seconds 5 --servers 2
      .venv/bin/python benchmarks/pending_poll.py --tasks 100000 --users 1 --polling-users 1
      (one user's history: compare with --tasks 1000 for the cost of a long history)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from sqlalchemy import insert

from sorakit.config import Settings
from sorakit.ids import new_id
from sorakit.server import auth
from sorakit.engines.base import WEB_SIZES
from sorakit.server.create import creation_config
from sorakit.server.services import build_services
from sorakit.store.schema import generations, tasks, users

HOST = "127.0.0.1"
PENDING = "/backend/nf/pending/v2"
HEALTHZ = "/healthz"
DAY = 24 * 3600.0

PROMPT_PARTS = [
    "A slow dolly shot through a rain-soaked neon market at night",
    "a golden retriever running along a beach at sunrise, waves in slow motion",
    "macro footage of dew drops sliding down a green leaf",
    "an astronaut planting a flag on a red desert planet, dust drifting",
    "aerial view over snowy mountains with clouds rolling between the peaks",
    "a paper boat drifting down a gutter stream in a city after the storm",
    "time-lapse of a bustling train station, people as streaks of light",
    "a cozy cabin interior with a crackling fireplace and snow outside the window",
    "cinematic, 35mm film grain, shallow depth of field",
    "handheld camera, documentary style, natural light",
    "in the style of a 1970s nature documentary",
    "soft pastel palette, dreamy atmosphere",
]

# The server process: settings over the prepared data dir, no workers, uvicorn on the given port.
SERVER_CODE = """
import sys
from pathlib import Path
import uvicorn
from sorakit.config import Settings
from sorakit.server.app import create_app
from sorakit.server.services import build_services

data_dir, port, window = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
settings = Settings(data_dir=data_dir, host="127.0.0.1", port=port, workers=0,
                    finished_window_seconds=window)
app = create_app(settings, services=build_services(settings, engines={}), workers=0)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


# -- the store ---------------------------------------------------------------------------------
def _prompt(rng: random.Random) -> str:
    return ", ".join(rng.sample(PROMPT_PARTS, rng.randint(1, 3)))


def _task_row(rng: random.Random, user_id: str, status: str, created: float) -> dict:
    orientation = rng.choice(["portrait", "portrait", "landscape", "square"])
    size = rng.choice(["small", "small", "small", "large"])
    width, height = WEB_SIZES[(size, orientation)]
    n_frames = rng.choice([150, 300, 300, 450])
    prompt = _prompt(rng)
    request = {"type": "video_gen", "prompt": prompt, "n_frames": n_frames, "orientation": orientation,
               "size": size, "model": "sy_8", "inpaint_items": [], "n_variants": 1}
    return {
        "id": new_id("task"), "user_id": user_id, "status": status, "prompt": prompt, "title": None,
        "model": "sy_8", "engine": "preview", "orientation": orientation, "size": size,
        "n_frames": n_frames, "width": width, "height": height, "fps": 30,
        "seed": rng.randrange(2**31), "style_id": None, "inpaint_items": [], "request": request,
        "priority": 1, "progress": None, "failure_reason": None, "created_at": created,
        "started_at": None, "finished_at": None, "lease_owner": None, "lease_expires": None,
        "attempts": 0, "cancel_requested": False,
    }


def _finish(rng: random.Random, row: dict, status: str, finished: float) -> dict | None:
    """Mark a task finished at ``finished``; returns the draft a worker would have recorded."""
    row.update(status=status, finished_at=finished, attempts=1,
               started_at=max(row["created_at"], finished - row["n_frames"] * 0.02 - rng.uniform(1, 5)))
    meta = {"prompt": row["prompt"], "title": row["title"], "creation_config": creation_config(row),
            "engine": {"name": "preview", "placeholder": True}, "fps": row["fps"]}
    gen = {"id": new_id("gen"), "task_id": row["id"], "user_id": row["user_id"], "created_at": finished,
           "width": row["width"], "height": row["height"], "n_frames": None, "video_file": None,
           "thumbnail_file": None, "video_bytes": None, "reason_str": None, "error_reason": None,
           "meta": meta}
    if status == "succeeded":
        row["progress"] = 1.0
        gen.update(kind="sora_draft", n_frames=row["n_frames"], video_file=f"{gen['id']}/video.mp4",
                   thumbnail_file=f"{gen['id']}/thumbnail.webp", video_bytes=rng.randint(200_000, 4_000_000))
        return gen
    if status == "failed":
        reason = "The engine stopped: out of memory while rendering."
        row["failure_reason"] = reason
        gen.update(kind="sora_error", reason_str=reason, error_reason="engine_error")
        return gen
    row["failure_reason"] = "task_cancelled"  # cancelled: no draft
    return None


def fill_store(engine, rng: random.Random, n_tasks: int, n_users: int, n_polling: int,
               window: float, now: float) -> tuple[list[str], collections.Counter]:
    """Insert users, tasks and drafts in one transaction; returns the polling users' ids and the mix."""
    user_rows = [{"id": new_id("user"), "name": f"bench-user-{i:03d}", "created_at": now - 120 * DAY,
                  "concurrency_limit": None, "daily_limit": None} for i in range(n_users)]
    polling = [u["id"] for u in user_rows[:n_polling]]
    task_rows, gen_rows, mix = [], [], collections.Counter()

    def add(row: dict, gen: dict | None, label: str) -> None:
        task_rows.append(row)
        if gen is not None:
            gen_rows.append(gen)
        mix[label] += 1

    # The polling users' live set: 1 running, 2 queued, 2 finished within the window.
    for user_id in polling:
        running = _task_row(rng, user_id, "running", now - rng.uniform(60, 120))
        running.update(started_at=now - rng.uniform(5, 50), progress=round(rng.uniform(0.1, 0.9), 2),
                       lease_owner="bench-worker", lease_expires=now + 3600, attempts=1)
        add(running, None, "live: running")
        for _ in range(2):
            add(_task_row(rng, user_id, "queued", now - rng.uniform(1, 60)), None, "live: queued")
        for status in ("succeeded", rng.choice(["succeeded", "failed"])):
            finished = now - rng.uniform(5, min(60.0, window / 4))
            row = _task_row(rng, user_id, status, finished - rng.uniform(20, 90))
            add(row, _finish(rng, row, status, finished), f"recent (in window): {status}")

    # Everything else finished long ago (1 to 90 days), spread over all users.
    for _ in range(max(n_tasks - len(task_rows), 0)):
        status = rng.choices(["succeeded", "failed", "cancelled"], weights=[85, 10, 5])[0]
        finished = now - rng.uniform(1 * DAY, 90 * DAY)
        row = _task_row(rng, rng.choice(user_rows)["id"], status, finished - rng.uniform(20, 600))
        add(row, _finish(rng, row, status, finished), f"old (1-90 days): {status}")

    with engine.begin() as conn:
        conn.execute(insert(users), user_rows)
        conn.execute(insert(tasks), task_rows)
        if gen_rows:
            conn.execute(insert(generations), gen_rows)
    mix["(drafts)"] = len(gen_rows)
    return polling, mix


# -- the server --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_total(pids: list[int]) -> float | None:
    """cpu_seconds summed over processes; None where any is unknown."""
    found = [cpu_seconds(pid) for pid in pids]
    return None if None in found else sum(found)


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def wait_ready(proc: subprocess.Popen, base: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    with httpx2.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log_path)}")
            try:
                if client.get(base + HEALTHZ).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"server not ready within {timeout:.0f} s:\n{_tail(log_path)}")


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no server log)"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def thread_settings() -> str:
    """The servers' thread pools as their settings make them (SORAKIT_API_THREADS and
    SORAKIT_HOT_THREADS in the environment they inherit)."""
    try:
        from sorakit.server.app import api_threads
        from sorakit.server.deps import hot_threads
    except ImportError:  # a server from before issue 13: anyio's default of 40 for every sync route
        return "40 for every sync route (anyio's default)"
    return f"{hot_threads()} for the hot routes (polls, task reads, creates), {api_threads()} for the rest"


# -- the load generator ------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    ok: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    server_cpu: float | None = None
    client_cpu: float = 0.0

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000


async def _poller(client: httpx2.AsyncClient, path: str, token: str, deadline: float, phase: Phase) -> None:
    """``path`` is a full URL (its server's base and the endpoint)."""
    headers = {"Authorization": f"Bearer {token}"}
    clock = time.perf_counter
    while clock() < deadline:
        start = clock()
        try:
            response = await client.get(path, headers=headers)
        except httpx2.HTTPError as exc:
            phase.errors[type(exc).__name__] += 1
            continue
        phase.latencies.append(clock() - start)
        if response.status_code == 200:
            phase.ok += 1
        else:
            phase.errors[f"HTTP {response.status_code}"] += 1


async def run_phase(client: httpx2.AsyncClient, name: str, bases: list[str], paths: list[str],
                    tokens: list[str], pollers: int, seconds: float, server_pids: list[int]) -> Phase:
    phase = Phase(name)
    cpu0, client0 = cpu_total(server_pids), time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(_poller(client, bases[i % len(bases)] + paths[i % len(paths)],
                                   tokens[i % len(tokens)], deadline, phase)
                           for i in range(pollers)))
    phase.elapsed = time.perf_counter() - start  # includes the requests in flight at the deadline
    cpu1 = cpu_total(server_pids)
    phase.server_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    phase.client_cpu = time.process_time() - client0
    return phase


async def load(bases: list[str], tokens: list[str], pollers: int, seconds: float, warmup: float,
               server_pids: list[int]) -> list[Phase]:
    limits = httpx2.Limits(max_connections=pollers, max_keepalive_connections=pollers)
    async with httpx2.AsyncClient(limits=limits, trust_env=False,
                                  timeout=httpx2.Timeout(30.0)) as client:
        phases = []
        if warmup > 0:
            phases.append(await run_phase(client, "warm-up (both)", bases, [HEALTHZ, PENDING], tokens, pollers,
                                          warmup, server_pids))
        for name, path in (("/healthz #1", HEALTHZ), (PENDING, PENDING), ("/healthz #2", HEALTHZ)):
            phases.append(await run_phase(client, name, bases, [path], tokens, pollers, seconds, server_pids))
        return phases


# -- main --------------------------------------------------------------------------------------
def sample_pending(base: str, token: str) -> tuple[int, int, collections.Counter]:
    with httpx2.Client(trust_env=False, timeout=30.0) as client:
        response = client.get(base + PENDING, headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    body = response.json()
    return len(response.content), len(body), collections.Counter(t["status"] for t in body)


def report(phases: list[Phase], pollers: int) -> None:
    print()
    head = (f"{'phase':<24} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'ok':>8} {'errors':>7} "
            f"{'srv CPU%':>9} {'srv CPU ms/req':>15} {'gen CPU%':>9}")
    print(head)
    print("-" * len(head))
    for p in phases:
        n_err = sum(p.errors.values())
        srv = f"{100 * p.server_cpu / p.elapsed:8.0f}%" if p.server_cpu is not None else f"{'n/a':>9}"
        per = f"{1000 * p.server_cpu / p.ok:15.2f}" if p.server_cpu is not None and p.ok else f"{'n/a':>15}"
        print(f"{p.name:<24} {p.rps:9.1f} {p.pct(0.50):8.1f} {p.pct(0.95):8.1f} {p.ok:8d} {n_err:7d} "
              f"{srv} {per} {100 * p.client_cpu / p.elapsed:8.0f}%")
    for p in phases:
        if p.errors:
            print(f"  errors in {p.name}: {dict(p.errors)}")
    h1, pending, h2 = phases[-3], phases[-2], phases[-1]
    healthz = (h1.rps + h2.rps) / 2
    print()
    drift = h2.rps / h1.rps if h1.rps else float("nan")
    print(f"healthz mean of both phases: {healthz:.1f} req/s (drift #2/#1: {drift:.2f})")
    print(f"ratio pending/v2 / healthz: {pending.rps / healthz if healthz else float('nan'):.3f}"
          f"  ({pollers} pollers)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase (10)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up length (default: min(3, seconds))")
    ap.add_argument("--pollers", type=int, default=50, help="concurrent pollers (50)")
    ap.add_argument("--tasks", type=int, default=10_000, help="tasks in the store (10000)")
    ap.add_argument("--users", type=int, default=50, help="users owning them (50)")
    ap.add_argument("--polling-users", type=int, default=25,
                    help="users with live tasks whose tokens the pollers use (25: 2 pollers each)")
    ap.add_argument("--window", type=float, default=300.0,
                    help="server's finished_window_seconds (300, the default setting)")
    ap.add_argument("--servers", type=int, default=1,
                    help="API processes on the one data dir, the pollers spread over them (1)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--keep-data", action="store_true", help="keep the temp data dir and print its path")
    args = ap.parse_args(argv)
    warmup = min(3.0, args.seconds) if args.warmup is None else args.warmup
    if not 1 <= args.polling_users <= args.users:
        ap.error("--polling-users must be from 1 to --users")
    total = warmup + 3 * args.seconds
    if total + 30 > args.window * 0.75:
        # The 'recent' tasks finished up to window/4 before the start; keep them inside the window.
        args.window = float(int((total + 30) / 0.75) + 1)
        print(f"(run is long: finished_window_seconds raised to {args.window:.0f} s so the mix stays put)")

    tmp = Path(tempfile.mkdtemp(prefix="sorakit-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        data_dir = tmp / "data"
        settings = Settings(data_dir=data_dir, workers=0, finished_window_seconds=args.window)
        services = build_services(settings, engines={})
        rng = random.Random(args.seed)
        t0 = time.perf_counter()
        polling, mix = fill_store(services.store.engine, rng, args.tasks, args.users, args.polling_users,
                                  args.window, time.time())
        fill_s = time.perf_counter() - t0
        tokens = [auth.issue(services.store, services.jwt_key, uid, 7 * DAY)[0] for uid in polling]
        services.store.engine.dispose()

        n_tasks = sum(v for k, v in mix.items() if not k.startswith("("))
        print(f"sorakit pending/v2 poll benchmark  (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"server and load generator on this machine)")
        print(f"store: {n_tasks} tasks, {mix['(drafts)']} drafts, {args.users} users "
              f"({args.polling_users} polling), filled in {fill_s:.2f} s")
        for label in sorted(k for k in mix if not k.startswith("(")):
            print(f"  {label:<32} {mix[label]:6d}")
        print(f"  per polling user: 1 running + 2 queued + 2 finished within the "
              f"{args.window:.0f} s window; {args.pollers} pollers, "
              f"{args.pollers / args.polling_users:.1f} per polling user")

        bases, logs = [], []
        for i in range(args.servers):
            port = free_port()
            bases.append(f"http://{HOST}:{port}")
            logs.append(tmp / f"server{i}.log")
            with open(logs[-1], "wb") as log:
                procs.append(subprocess.Popen([sys.executable, "-c", SERVER_CODE, str(data_dir), str(port),
                                               str(args.window)], stdout=log, stderr=subprocess.STDOUT))
        for proc, base, log_path in zip(procs, bases, logs):
            wait_ready(proc, base, 60.0, log_path)
        base = bases[0]
        if args.servers > 1:
            print(f"{args.servers} API processes on the one database, the pollers spread over them "
                  f"(server CPU below is their sum)")

        size, count, statuses = sample_pending(base, tokens[0])
        print(f"one pending/v2 response: {size} bytes, {count} tasks {dict(statuses)}")
        print(f"server threads: {thread_settings()}")
        print(f"phases: warm-up {warmup:g} s, then {args.seconds:g} s each: /healthz, {PENDING}, /healthz")

        phases = asyncio.run(load(bases, tokens, args.pollers, args.seconds, warmup, [p.pid for p in procs]))
        report(phases, args.pollers)

        size2, count2, _ = sample_pending(base, tokens[0])
        if (size2, count2) != (size, count):
            print(f"note: the response changed during the run "
                  f"({count} -> {count2} tasks, {size} -> {size2} bytes)")
        for proc, log_path in zip(procs, logs):
            if proc.poll() is not None:
                print(f"warning: a server exited during the run:\n{_tail(log_path)}")
        return 0
    finally:
        for proc in procs:
            stop(proc)
        if args.keep_data:
            print(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
