"""Benchmark: what building on a video costs, against making a plain video of the same length.

On the preview engine (CPU, no weights), through the real app in-process with one worker, each
operation's wall time from create to succeeded is compared with a plain ``generate`` of the same
output size and length, measured in the same run:

- remix of a 10 s source (decodes the source while rendering);
- extension of a 10 s source by 5 s (decodes and re-encodes the source, renders 5 s);
- a storyboard of three 5 s shots (15 s);
- 3 variations of a 5 s video (one task, three videos);
- sound: the same 10 s video with and without its AAC track (``audio: false``).

Prints seconds and the ratio to the plain baseline for each. Run:
    .venv/bin/python benchmarks/operations.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import Api  # noqa: E402  (the tests' in-process harness: real app, real worker)

FPS = 30


def timed(api: Api, path: str, body: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    r = api.client.post(path, json=body, headers=api.alice)
    assert r.status_code == 200, r.text
    task = api.wait(r.json()["id"], timeout=600)
    assert task["status"] == "succeeded", task
    return time.perf_counter() - start, task


def create(api: Api, **body) -> tuple[float, dict]:
    return timed(api, "/backend/nf/create", {"orientation": "portrait", **body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        api = Api(Path(tmp), 1, None, default_concurrency=10, default_daily_limit=10_000)
        try:
            for _ in range(args.repeat):
                _, source = create(api, prompt="a lighthouse", n_frames=10 * FPS)
                gen = source["generations"][0]["id"]
                pairs = {
                    "remix 10 s": (create(api, prompt="in snow", remix_target_id=gen)[0],
                                   create(api, prompt="in snow", n_frames=10 * FPS)[0]),
                    "extend 10 s + 5 s": (
                        timed(api, f"/backend/project_y/profile/drafts/{gen}/long_video_extension",
                              {"user_prompt": "a storm", "extension_duration_s": 5})[0],
                        create(api, prompt="a storm", n_frames=15 * FPS)[0]),
                    "storyboard 3 x 5 s": (
                        timed(api, "/backend/nf/create/storyboard",
                              {"orientation": "portrait", "shots": [{"prompt": p, "duration_s": 5}
                                                                    for p in ("dawn", "noon", "dusk")]})[0],
                        create(api, prompt="dawn", n_frames=15 * FPS)[0]),
                    "3 variations of 5 s": (create(api, prompt="kites", n_frames=5 * FPS, nsamples=3)[0],
                                            create(api, prompt="kites", n_frames=15 * FPS)[0]),
                    "10 s with sound": (create(api, prompt="a bell", n_frames=10 * FPS)[0],
                                        create(api, prompt="a bell", n_frames=10 * FPS, audio=False)[0]),
                }
                for name, pair in pairs.items():
                    rows.setdefault(name, []).append(pair)
        finally:
            api.close()
    print(f"{'operation':<22} {'seconds':>8} {'baseline':>9} {'ratio':>6}   baseline = a plain video as long")
    for name, pairs in rows.items():
        op = statistics.median(p[0] for p in pairs)
        base = statistics.median(p[1] for p in pairs)
        print(f"{name:<22} {op:8.2f} {base:9.2f} {op / base:6.2f}")


if __name__ == "__main__":
    main()
