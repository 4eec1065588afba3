"""How much the preview engine costs on top of plain H.264 encoding.

Target (issue 13): at 352x640 for 10 s (300 frames at 30 fps), the preview engine's frames streamed
through the encoder cost at most 1.5x of blank frames through the same encoder.

Both arms call ``encode_mp4`` exactly as the worker does (``expected_frames`` and an ``on_frame``
callback, an iterator without a length, 300 frames, 30 fps, the same preset and crf):

  preview  ``PreviewEngine().frames(job, ctx)`` -- rendering on its own thread, as in the server --
           consumed by ``encode_mp4``;
  blank    300 all-zero frames consumed by the same ``encode_mp4``.

The arms alternate (which one goes first alternates too) for ``--repeat`` rounds; each round gives
a ratio preview/blank, and the median of those ratios is the figure to quote. Process CPU seconds
are printed beside wall seconds: on a machine whose cores are busy with other work, the threads
cannot overlap and the wall ratio drifts towards the CPU ratio.

With ``--breakdown`` it also times, per round, the engine's drawing alone (``PreviewEngine.draw``,
no encoder, no thread) and the encoder alone on the preview's frames rendered beforehand: what
the overlap has to hide.

    PYTHONPATH=src .venv/bin/python benchmarks/preview_engine.py [--repeat 7] [--breakdown] [--large]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from sorakit.engines.base import RenderJob
from sorakit.engines.preview import PreviewEngine
from sorakit.media.encode import PRESET, encode_mp4

N_FRAMES, FPS, CRF = 300, 30, 23
SIZE = (352, 640)  # (width, height): the size, portrait "small"
LARGE = (720, 1280)
PROMPT = "A corgi surfing a giant wave at sunset, cinematic lighting, slow motion drone shot"
TARGET = 1.5


class _NullContext:
    def progress(self, fraction: float) -> None:
        pass

    def check_cancel(self) -> None:
        pass

    def audio(self, track) -> None:
        pass


def _job(width: int, height: int) -> RenderJob:
    return RenderJob(task_id="bench", prompt=PROMPT, width=width, height=height,
                     n_frames=N_FRAMES, fps=FPS, seed=7)


def _encode(frames: Iterator[np.ndarray], path: Path, width: int, height: int) -> None:
    """``encode_mp4`` called as the worker calls it."""
    seen = []
    result = encode_mp4(frames, path, width=width, height=height, fps=FPS, crf=CRF,
                        on_frame=seen.append, expected_frames=N_FRAMES)
    if result.n_frames != N_FRAMES or seen[-1] != N_FRAMES:
        raise SystemExit(f"encoded {result.n_frames} frames, not {N_FRAMES}")


def _blank_frames(width: int, height: int) -> Iterator[np.ndarray]:
    blank = np.zeros((height, width, 3), dtype=np.uint8)
    return (blank for _ in range(N_FRAMES))


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """Wall and process-CPU seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(width: int, height: int, repeat: int, breakdown: bool, workdir: Path) -> dict[str, list]:
    job = _job(width, height)
    arms: dict[str, Callable[[], None]] = {
        "preview": lambda: _encode(PreviewEngine().frames(job, _NullContext()), workdir / "p.mp4",
                                   width, height),
        "blank": lambda: _encode(_blank_frames(width, height), workdir / "b.mp4", width, height),
    }
    if breakdown:
        rendered = list(PreviewEngine().draw(job))
        arms["draw only"] = lambda: sum(1 for _ in PreviewEngine().draw(job))
        arms["encode only"] = lambda: _encode(iter(rendered), workdir / "e.mp4", width, height)
    for fn in arms.values():  # warm-up: imports, fonts, x264's first open
        fn()
    runs: dict[str, list] = {name: [] for name in arms}
    for n in range(repeat):
        order = list(arms) if n % 2 == 0 else ["blank", "preview"] + list(arms)[2:]
        for name in order:
            runs[name].append(timed(arms[name]))
    return runs


def report(width: int, height: int, runs: dict[str, list]) -> float:
    ratios = [p[0] / b[0] for p, b in zip(runs["preview"], runs["blank"])]
    cpu_ratios = [p[1] / b[1] for p, b in zip(runs["preview"], runs["blank"])]
    print(f"\n{width}x{height}, {N_FRAMES} frames:")
    print(f"  {'arm':<12} {'wall med':>9} {'wall min':>9} {'cpu med':>8}")
    for name, values in runs.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        print(f"  {name:<12} {statistics.median(walls):>9.3f} {min(walls):>9.3f} "
              f"{statistics.median(cpus):>8.3f}")
    ratio = statistics.median(ratios)
    print(f"  preview/blank per round (wall): {' '.join(f'{r:.2f}' for r in ratios)}")
    print(f"  median ratio, wall {ratio:.2f} (target <= {TARGET}); CPU {statistics.median(cpu_ratios):.2f}; "
          f"preview {N_FRAMES / statistics.median(w for w, _ in runs['preview']):.0f} fps")
    if "encode only" in runs:
        floor = statistics.median(e[0] / b[0] for e, b in zip(runs["encode only"], runs["blank"]))
        hidden = statistics.median(p[0] / e[0] for p, e in zip(runs["preview"], runs["encode only"]))
        print(f"  encode only/blank {floor:.2f} (the ratio if drawing cost nothing: x264 on these frames "
              f"vs on blank ones); preview/encode only {hidden:.2f} (what drawing adds)")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="rounds (each: both arms, alternating)")
    parser.add_argument("--breakdown", action="store_true", help="also time drawing and encoding alone")
    parser.add_argument("--large", action="store_true", help=f"also measure {LARGE[0]}x{LARGE[1]}")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    print(f"{N_FRAMES} frames @ {FPS} fps through encode_mp4 (libx264 preset={PRESET} crf={CRF}), "
          f"{args.repeat} rounds; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    sizes = [SIZE] + ([LARGE] if args.large else [])
    with tempfile.TemporaryDirectory(prefix="sorakit-preview-bench-") as tmp:
        for width, height in sizes:
            report(width, height, measure(width, height, args.repeat, args.breakdown, Path(tmp)))
    print(f"\nload average after: {os.getloadavg()[0]:.2f} (busy cores make every figure noisier)")


if __name__ == "__main__":
    main()
