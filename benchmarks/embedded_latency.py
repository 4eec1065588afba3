"""Benchmark: how long after the engine finishes does ``generate`` return, on the embedded server?

The command-line path exactly: ``sorakit.cli.connect.connect()`` with no server configured starts
the embedded server (the real app, its workers as ``sorakit worker`` processes) over a fresh data
dir, and ``generate`` creates, follows and downloads N short videos one after the other. For
each video the delay is the moment ``generate`` returned minus the task's ``finished_at`` in the
store (stamped when the worker recorded the finished video): the time spent noticing the video is
ready, plus downloading it and writing its sidecar.

Prints each delay, their median and max, and the median's and max's ratio to the 0.5 s target.
``--poll A`` overrides the poll interval (``--poll 2.5`` shows the remote cadence's delays).

Run:  .venv/bin/python benchmarks/embedded_latency.py [--videos 10] [--frames 30] [--poll SECONDS]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

TARGET = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--frames", type=int, default=30, help="frames per video (30 = 1 s)")
    parser.add_argument("--poll", type=float, default=None, help="poll interval (default: connect's own)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        for key in [k for k in os.environ if k.startswith("SORAKIT_")]:
            del os.environ[key]  # the embedded default, never a configured server
        os.environ["SORAKIT_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ["SORAKIT_CONFIG_DIR"] = str(Path(tmp) / "cfg")
        from sorakit.cli.connect import connect

        poll = (args.poll, args.poll) if args.poll else None
        started = time.perf_counter()
        with connect(poll_interval=poll) as conn:
            print(f"embedded server up in {time.perf_counter() - started:.2f} s at {conn.server}; polling every "
                  f"{conn.client.core.poll_interval[0]:g}-{conn.client.core.poll_interval[1]:g} s "
                  f"(at most {conn.client.core.poll_max:g} s)")
            store = conn.embedded.services.store
            delays = []
            for n in range(args.videos):
                result = conn.client.generate(f"a lighthouse in fog, take {n}", n_frames=args.frames,
                                              output=str(Path(tmp) / "{task_id}.mp4"))
                returned = time.time()
                finished = store.task(result.task["id"])["finished_at"]
                delays.append(returned - finished)
                print(f"video {n + 1:>2}: generate returned {delays[-1]:.3f} s after finished_at")
        median, worst = statistics.median(delays), max(delays)
        print(f"\ndelay over {len(delays)} videos: median {median:.3f} s, max {worst:.3f} s")
        print(f"ratio to the {TARGET} s target: median {median / TARGET:.2f}x, max {worst / TARGET:.2f}x")


if __name__ == "__main__":
    main()
