"""Benchmark: ``SoraClient.download`` vs ``curl -o`` on one 200 MB video over loopback.

What it does:

1. Makes a data dir, a user and a token, and starts the real server (uvicorn, ``create_app``) on
   127.0.0.1 in a subprocess, so the server and the client being measured do not share a GIL.
2. Generates a one-frame video through the API, then replaces the file behind its draft
   (``media/<gen_id>/video.mp4``) with ``--mb`` MB of random bytes: the sorakit asset route serves
   it like any video (signed link, ``FileResponse``).
3. Downloads it ``--rounds`` times each way, alternating, from the same fresh signed link:
   - ``curl -s -o FILE URL``, timed around the process;
   - ``SoraClient.download(draft, FILE)`` in a fresh Python subprocess, timed around the call
     (imports excluded). The call includes the client's SHA-256 pass over the finished file; the
     subprocess also times a second SHA-256 pass alone so the transfer can be told from the hash.
   Both files are checked against the server's SHA-256. The subprocess reports its peak RSS
   (``VmHWM``) after imports and again after the download.
4. Prints MB/s (best of the rounds) for both, their ratio, and the client's memory figures.

Run:  .venv/bin/python benchmarks/download_throughput.py [--mb 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sorakit.client import SoraClient
from sorakit.config import load_settings
from sorakit.server import auth
from sorakit.server.services import build_services

SERVER_CODE = """
import sys
import uvicorn
from sorakit.config import load_settings
from sorakit.server.app import create_app
settings = load_settings({"data_dir": sys.argv[1], "workers": 1}, env={})
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""

CLIENT_CODE = """
import json, sys, time
from pathlib import Path

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None

from sorakit.client import SoraClient
from sorakit.client.download import sha256_file
base, token, draft, dest = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4])
client = SoraClient(base, token)
baseline = status("VmHWM")
started = time.perf_counter()
sha = client.download(draft, dest)
seconds = time.perf_counter() - started
peak = status("VmHWM")
started = time.perf_counter()
sha_again = sha256_file(dest)
hash_seconds = time.perf_counter() - started
client.close()
print(json.dumps({"sha": sha, "seconds": seconds, "hash_seconds": hash_seconds, "baseline_hwm": baseline,
                  "peak_hwm": peak, "sha_again": sha_again}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen) -> None:
    import httpx2

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx2.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("server not healthy within 30 s")


def write_random(path: Path, mb: int) -> str:
    digest = hashlib.sha256()
    tmp = path.with_name(path.name + ".bench")
    with open(tmp, "wb") as f:
        for _ in range(mb):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    os.replace(tmp, path)
    return digest.hexdigest()


def file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_curl(url: str, dest: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["curl", "-s", "-f", "-o", str(dest), url], check=True)
    return time.perf_counter() - started


def run_client(base: str, token: str, draft: dict, dest: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CLIENT_CODE, base, token, json.dumps(draft), str(dest)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="file size in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="downloads each way (best is reported)")
    args = parser.parse_args()
    if not shutil.which("curl"):
        raise SystemExit("curl not found")

    with tempfile.TemporaryDirectory(prefix="sorakit-dl-") as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "out"
        out.mkdir()
        services = build_services(load_settings({"data_dir": data, "workers": 1}, env={}))
        user = services.store.create_user("bench")
        token, _ = auth.issue(services.store, services.jwt_key, user["id"], 3600)
        services.store.engine.dispose()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-c", SERVER_CODE, str(data), str(port)],
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_healthy(base, server)
            with SoraClient(base, token) as c:
                task = c.wait(c.create("a very large placeholder", n_frames=1)["id"])
                gen_id = task["generations"][0]["id"]
                expected = write_random(data / "media" / gen_id / "video.mp4", args.mb)
                draft = c.draft(gen_id)
            size = args.mb * (1 << 20)
            curl_s, client_runs = [], []
            for i in range(args.rounds):
                dest = out / f"curl{i}.mp4"
                curl_s.append(run_curl(draft["url"], dest))
                assert dest.stat().st_size == size and file_sha(dest) == expected, "curl got a wrong file"
                dest.unlink()
                dest = out / f"client{i}.mp4"
                result = run_client(base, token, draft, dest)
                assert result["sha"] == result["sha_again"] == expected, "the client got a wrong file"
                assert dest.stat().st_size == size
                dest.unlink()
                client_runs.append(result)
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    mb = size / 1e6
    best_curl = min(curl_s)
    best = min(client_runs, key=lambda r: r["seconds"])
    transfer = best["seconds"] - best["hash_seconds"]
    peak = max(r["peak_hwm"] for r in client_runs)
    base_rss = min(r["baseline_hwm"] for r in client_runs)
    print(f"file: {args.mb} MiB ({mb:.1f} MB) of random bytes behind a draft, served by /assets on 127.0.0.1; "
          f"best of {args.rounds}\n")
    print(f"curl -o               {mb / best_curl:8.1f} MB/s   ({best_curl:.2f} s; runs "
          + ", ".join(f"{s:.2f}" for s in curl_s) + ")")
    print(f"SoraClient.download   {mb / best['seconds']:8.1f} MB/s   ({best['seconds']:.2f} s; runs "
          + ", ".join(f"{r['seconds']:.2f}" for r in client_runs) + "; includes its SHA-256 pass)")
    print(f"  without the hash    {mb / transfer:8.1f} MB/s   (SHA-256 alone: {best['hash_seconds']:.2f} s)")
    print(f"\nclient / curl: {best_curl / best['seconds']:.2f} (with hash), {best_curl / transfer:.2f} (transfer only)")
    print(f"client peak RSS: {peak / 2**20:.1f} MiB, after imports {base_rss / 2**20:.1f} MiB: "
          f"the download added {(peak - base_rss) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
