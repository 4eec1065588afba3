"""Benchmark: HTTP requests per finished video for a batch of 20 prompts.

Two ways of running the same batch against the same server, in the same run, with the same poll
interval:

- ``SoraClient``: ``create`` x 20, ``wait_many`` (one ``pending/v2`` per cycle serves every task),
  then ``download`` x 20.
- the seed's way (the Python script of the seed document, batched): ``POST create`` x 20, then each
  cycle, for every unfinished task, ``GET pending/v2`` and look for it; a task listed as
  ``succeeded`` is downloaded from ``generations[0].url``.

The server is the real app (uvicorn on 127.0.0.1 in a background thread, ``--workers`` in-process
workers, ``default_concurrency`` 20 so all 20 tasks are admitted at once, ``preview_pace`` so each
video takes a while). Requests are counted at the server by an ASGI wrapper, creates and downloads
included. Prints the counts by kind, requests per finished video for each way, and their ratio.

Run:  .venv/bin/python benchmarks/client_requests.py [--interval 0.5] [--pace 1.0] [--workers 4]
"""

from __future__ import annotations

import argparse
import collections
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx2
import uvicorn

from sorakit.client import RetryPolicy, SoraClient
from sorakit.config import load_settings
from sorakit.server import auth
from sorakit.server.app import create_app
from sorakit.server.services import build_services

PROMPTS = [
    "a red kite over a grey sea", "a paper boat drifting down a gutter after rain",
    "macro shot of dew sliding down a leaf", "a fox crossing a snowy road at dusk",
    "time-lapse of clouds over a mountain ridge", "a lighthouse beam sweeping through fog",
    "a cat watching raindrops on a window", "slow pan across a neon night market",
    "a hot air balloon rising at sunrise", "waves breaking on black volcanic sand",
    "a train crossing a viaduct in autumn", "an astronaut planting a flag on a red desert",
    "a hummingbird hovering at a flower", "city traffic as streaks of light",
    "a campfire under a starry sky", "koi fish circling in a pond",
    "a windmill turning in a tulip field", "snow falling on a quiet street",
    "a sailboat tacking in a strong breeze", "a dog running along a beach at dawn",
]
KINDS = [("create", "/backend/nf/create"), ("pending/v2", "/backend/nf/pending/v2"),
         ("tasks/{id}/v2", "/backend/nf/tasks/"), ("drafts", "/backend/project_y/profile/drafts"),
         ("download", "/assets/")]


class Counter:
    """ASGI wrapper counting requests by kind."""

    def __init__(self, app) -> None:
        self.app = app
        self.counts: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            kind = next((k for k, prefix in KINDS if scope["path"].startswith(prefix)), "other")
            with self.lock:
                self.counts[kind] += 1
        await self.app(scope, receive, send)

    def take(self) -> collections.Counter[str]:
        with self.lock:
            counts, self.counts = self.counts, collections.Counter()
        return counts


def serve(app, port_holder: list) -> tuple[uvicorn.Server, threading.Thread, socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port_holder.append(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("uvicorn did not start")
        time.sleep(0.02)
    return server, thread, sock


def with_client(base: str, token: str, out: Path, interval: float, n_frames: int) -> int:
    with SoraClient(base, token, poll_interval=(interval, interval), poll_max=interval,
                    retry=RetryPolicy()) as c:
        ids = [c.create(p, n_frames=n_frames)["id"] for p in PROMPTS]
        watches = c.wait_many(ids)
        done = 0
        for w in watches:
            if w.error is None:
                c.download(w.task["generations"][0], out / f"client_{w.task_id}.mp4")
                done += 1
        return done


def the_seed_way(base: str, token: str, out: Path, interval: float, n_frames: int) -> int:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx2.Client(base_url=base, headers=headers, timeout=30) as http:
        open_ids = []
        for p in PROMPTS:
            body = {"kind": "video", "prompt": p, "model": "sy_8", "orientation": "portrait", "n_frames": n_frames}
            open_ids.append(http.post("/backend/nf/create", json=body).json()["id"])
        done = 0
        while open_ids:
            for task_id in list(open_ids):
                tasks = http.get("/backend/nf/pending/v2").json()
                mine = next((t for t in tasks if t["id"] == task_id), None)
                if mine and mine["status"] == "succeeded":
                    url = mine["generations"][0]["url"]
                    with httpx2.Client(timeout=30) as plain:  # the link needs no credentials
                        (out / f"seed_{task_id}.mp4").write_bytes(plain.get(url).content)
                    open_ids.remove(task_id)
                    done += 1
                elif mine and mine["status"] == "failed":
                    open_ids.remove(task_id)
            if open_ids:
                time.sleep(interval)
        return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interval", type=float, default=0.5, help="poll interval, seconds, both ways")
    parser.add_argument("--pace", type=float, default=1.0, help="minimum seconds per preview video")
    parser.add_argument("--workers", type=int, default=4, help="server workers")
    parser.add_argument("--frames", type=int, default=30, help="n_frames per video")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sorakit-bench-") as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "out"
        out.mkdir()
        settings = load_settings({"data_dir": data, "workers": args.workers, "default_concurrency": 20,
                                  "preview_pace": args.pace, "finished_window_seconds": 300}, env={})
        services = build_services(settings)
        user = services.store.create_user("bench")
        token, _ = auth.issue(services.store, services.jwt_key, user["id"], 3600)
        counter = Counter(create_app(settings, services=services))
        port: list[int] = []
        server, thread, sock = serve(counter, port)
        base = f"http://127.0.0.1:{port[0]}"
        results = {}
        try:
            for name, run in (("SoraClient.wait_many", with_client), ("seed loop", the_seed_way)):
                counter.take()
                started = time.monotonic()
                done = run(base, token, out, args.interval, args.frames)
                results[name] = (counter.take(), done, time.monotonic() - started)
        finally:
            server.should_exit = True
            thread.join(15)
            sock.close()

    print(f"{len(PROMPTS)} prompts, {args.frames} frames each, server: {args.workers} workers, "
          f"preview_pace {args.pace} s, poll interval {args.interval} s (both ways)\n")
    kinds = [k for k, _ in KINDS] + ["other"]
    print(f"{'':22}" + "".join(f"{k:>15}" for k in kinds) + f"{'total':>8}{'videos':>8}{'per video':>11}{'wall s':>8}")
    per_video = {}
    for name, (counts, done, wall) in results.items():
        total = sum(counts.values())
        per_video[name] = total / max(done, 1)
        print(f"{name:22}" + "".join(f"{counts.get(k, 0):>15}" for k in kinds)
              + f"{total:>8}{done:>8}{per_video[name]:>11.2f}{wall:>8.1f}")
    a, b = per_video["SoraClient.wait_many"], per_video["seed loop"]
    print(f"\nrequests per finished video: SoraClient {a:.2f}, seed loop {b:.2f}; "
          f"the seed loop sends {b / a:.1f}x as many")


if __name__ == "__main__":
    main()
