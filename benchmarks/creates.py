"""Benchmark (issue 13): ``POST /backend/nf/create`` sustained for a minute, without decay.

What it does:

1. Builds a data dir in a temporary directory with ``--users`` users and a token each, optionally
   with ``--tasks`` old finished tasks spread over them first (a store with history). No user has
   a concurrency cap; each has a daily limit (``--daily-limit``) above what one user reaches in the
   run, so each user's own history stays what a real user's is in a day while the global queue
   grows with all of them.
2. Starts a real uvicorn server on 127.0.0.1 in a subprocess with the preview engine and **no
   workers**, and a global queue limit above anything the run can reach, so every admitted task
   stays queued and the queue grows for the whole run (the worst case for everything that counts
   or sorts queued tasks).
3. Runs ``--creators`` concurrent clients (asyncio + one ``httpx2.AsyncClient``), each posting
   small text-to-video requests in a tight loop for ``--seconds``, the users taking turns.

It prints per ``--window``-second window (by completion time) creates/s, latency p50/p95 and the
server's CPU (% and ms per create: a figure that the machine's other load moves less than the
rate); then the ratio of the last window's rate to the first's (the target: at least 0.9), errors,
and the queue length at the end. No assertions on timing.

Run:  .venv/bin/python benchmarks/creates.py --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

try:
    from pending_poll import HOST, _tail, cpu_seconds, fill_store, free_port, stop, thread_settings, wait_ready
except ImportError:  # pragma: no cover - run as a module
    from benchmarks.pending_poll import (HOST, _tail, cpu_seconds, fill_store, free_port, stop, thread_settings,
                                         wait_ready)

from sorakit.config import Settings
from sorakit.server import auth
from sorakit.server.services import build_services

CREATE = "/backend/nf/create"
DAY = 24 * 3600.0
BIG = 10_000_000

SERVER_CODE = """
import sys
from pathlib import Path
import uvicorn
from sorakit.config import Settings
from sorakit.server.app import create_app
from sorakit.server.services import build_services

data_dir, port, big, daily = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
settings = Settings(data_dir=data_dir, host="127.0.0.1", port=port, workers=0, max_queue=big,
                    default_concurrency=big, default_daily_limit=daily)
app = create_app(settings, services=build_services(settings), workers=0)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


async def _creator(client: httpx2.AsyncClient, tokens: list[str], turn: itertools.count, deadline: float,
                   done: list[tuple[float, float]], errors: collections.Counter, rng: random.Random) -> None:
    clock = time.perf_counter
    while clock() < deadline:
        headers = {"Authorization": f"Bearer {tokens[next(turn) % len(tokens)]}"}  # users take turns
        body = {"prompt": f"a bench video number {rng.randrange(10**9)}", "n_frames": 30,
                "orientation": "portrait", "size": "small"}
        start = clock()
        try:
            response = await client.post(CREATE, headers=headers, json=body)
        except httpx2.HTTPError as exc:
            errors[type(exc).__name__] += 1
            continue
        end = clock()
        if response.status_code == 200:
            done.append((end, end - start))
        else:
            errors[f"HTTP {response.status_code}"] += 1


async def _cpu_sampler(pid: int, start: float, window: float, n: int, samples: list[float | None]) -> None:
    """The server's CPU seconds at each window boundary (for CPU per create, window by window)."""
    samples.append(cpu_seconds(pid))
    for i in range(1, n + 1):
        await asyncio.sleep(max(start + i * window - time.perf_counter(), 0))
        samples.append(cpu_seconds(pid))


async def load(base: str, tokens: list[str], creators: int, seconds: float, seed: int, pid: int,
               window: float):
    limits = httpx2.Limits(max_connections=creators, max_keepalive_connections=creators)
    done: list[tuple[float, float]] = []
    errors: collections.Counter = collections.Counter()
    samples: list[float | None] = []
    rng = random.Random(seed)
    async with httpx2.AsyncClient(base_url=base, limits=limits, trust_env=False,
                                  timeout=httpx2.Timeout(60.0)) as client:
        start = time.perf_counter()
        turn = itertools.count()
        await asyncio.gather(_cpu_sampler(pid, start, window, int(seconds // window), samples),
                             *(_creator(client, tokens, turn, start + seconds, done, errors, rng)
                               for _ in range(creators)))
    return start, done, errors, samples


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the run (60)")
    ap.add_argument("--window", type=float, default=10.0, help="reporting window in seconds (10)")
    ap.add_argument("--creators", type=int, default=16, help="concurrent clients (16)")
    ap.add_argument("--users", type=int, default=500, help="users creating, taking turns (500)")
    ap.add_argument("--daily-limit", type=int, default=1000,
                    help="each user's daily limit (1000: above what one user reaches in a minute here)")
    ap.add_argument("--tasks", type=int, default=0, help="old finished tasks in the store first (0)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="sorakit-bench-creates-"))
    proc = None
    try:
        data_dir = tmp / "data"
        settings = Settings(data_dir=data_dir, workers=0)
        services = build_services(settings, engines={})
        rng = random.Random(args.seed)
        now = time.time()
        # the same filler as pending_poll.py (with --tasks, each user also gets its small live set)
        users, _ = fill_store(services.store.engine, rng, args.tasks, args.users, args.users, 300.0, now)
        if not args.tasks:  # fill_store added each user's live set: drop it, start empty
            from sqlalchemy import delete

            from sorakit.store.schema import generations, tasks
            with services.store.engine.begin() as conn:
                conn.execute(delete(generations))
                conn.execute(delete(tasks))
        tokens = [auth.issue(services.store, services.jwt_key, uid, 7 * DAY)[0] for uid in users]
        services.store.engine.dispose()

        print(f"sorakit create benchmark  (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"server and load generator on this machine)")
        print(f"{args.users} users (daily limit {args.daily_limit} each), {args.creators} creators, "
              f"{args.seconds:g} s, preview engine, no workers (the queue grows); store starts with "
              f"{args.tasks} old tasks")

        port = free_port()
        base = f"http://{HOST}:{port}"
        log_path = tmp / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-c", SERVER_CODE, str(data_dir), str(port), str(BIG),
                                     str(args.daily_limit)],
                                    stdout=log, stderr=subprocess.STDOUT)
        wait_ready(proc, base, 60.0, log_path)
        print(f"server threads: {thread_settings()}")

        cpu0, client0 = cpu_seconds(proc.pid), time.process_time()
        start, done, errors, samples = asyncio.run(load(base, tokens, args.creators, args.seconds, args.seed,
                                                        proc.pid, args.window))
        cpu1 = cpu_seconds(proc.pid)
        elapsed = max(end for end, _ in done) - start if done else args.seconds

        windows: dict[int, list[float]] = collections.defaultdict(list)
        for end, latency in done:
            windows[min(int((end - start) // args.window), int(args.seconds // args.window) - 1)].append(latency)
        print()
        head = (f"{'window':<14} {'creates/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'vs first':>9} "
                f"{'srv CPU%':>9} {'srv CPU ms/create':>18}")
        print(head)
        print("-" * len(head))
        rates = []
        for i in range(int(args.seconds // args.window)):
            lat = windows.get(i, [])
            rate = len(lat) / args.window
            rates.append(rate)
            label = f"{i * args.window:g}-{(i + 1) * args.window:g} s"
            cpu = (samples[i + 1] - samples[i] if i + 1 < len(samples) and None not in samples[i:i + 2]
                   else None)
            cpu_text = (f"{100 * cpu / args.window:8.0f}% {1000 * cpu / len(lat) if lat else float('nan'):18.2f}"
                        if cpu is not None else f"{'n/a':>9} {'n/a':>18}")
            print(f"{label:<14} {rate:10.1f} {pct(lat, 0.5):8.1f} {pct(lat, 0.95):8.1f} "
                  f"{rate / rates[0] if rates[0] else float('nan'):9.2f} {cpu_text}")
        print()
        print(f"total: {len(done)} creates in {elapsed:.1f} s ({len(done) / elapsed:.1f}/s); errors: "
              f"{dict(errors) or 0}")
        if cpu0 is not None and cpu1 is not None and done:
            print(f"server CPU: {100 * (cpu1 - cpu0) / elapsed:.0f}% ({1000 * (cpu1 - cpu0) / len(done):.2f} ms "
                  f"per create); load generator CPU: {100 * (time.process_time() - client0) / elapsed:.0f}%")
        with sqlite3.connect(settings.db_path) as db:
            queued = db.execute("SELECT COUNT(*) FROM tasks WHERE status = 'queued'").fetchone()[0]
        wal = settings.db_path.with_name(settings.db_path.name + "-wal")
        sizes = [f"{path.name} {path.stat().st_size / 2**20:.1f} MiB" for path in (settings.db_path, wal)
                 if path.exists()]
        print(f"queue at the end: {queued} tasks; {', '.join(sizes)}")
        if len(rates) >= 2 and rates[0]:
            print(f"ratio last window / first window: {rates[-1] / rates[0]:.3f}")
        if proc.poll() is not None:
            print(f"warning: server exited during the run:\n{_tail(log_path)}")
        return 0
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
