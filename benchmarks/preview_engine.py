"""How much the preview engine costs on top of plain H.264 encoding.

For a 10 s clip (300 frames) at each size, times (a) PreviewEngine rendering streamed through
``encode_mp4`` and (b) PyAV encoding 300 all-zero frames with the same codec settings, then
prints the best of ``--repeat`` runs and their ratio.

    PYTHONPATH=src .venv/bin/python benchmarks/preview_engine.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from sorakit.engines.base import RenderJob
from sorakit.engines.preview import PreviewEngine
from sorakit.media.encode import PIX_FMT, PRESET, encode_mp4

N_FRAMES, FPS, CRF = 300, 30, 23
SIZES = [(352, 640), (720, 1280)]  # (width, height), portrait
PROMPT = "A corgi surfing a giant wave at sunset, cinematic lighting, slow motion drone shot"


class _NullContext:
    def progress(self, fraction: float) -> None:
        pass

    def check_cancel(self) -> None:
        pass


def preview_clip(path: Path, width: int, height: int) -> None:
    job = RenderJob(task_id="bench", prompt=PROMPT, width=width, height=height,
                    n_frames=N_FRAMES, fps=FPS, seed=7)
    frames = PreviewEngine().frames(job, _NullContext())
    encode_mp4(frames, path, width=width, height=height, fps=FPS, crf=CRF)


def blank_clip(path: Path, width: int, height: int) -> None:
    blank = np.zeros((height, width, 3), dtype=np.uint8)
    with av.open(str(path), mode="w", format="mp4",
                 options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS,
                                      options={"preset": PRESET, "crf": str(CRF)})
        stream.width, stream.height, stream.pix_fmt = width, height, PIX_FMT
        stream.codec_context.time_base = Fraction(1, FPS)
        for i in range(N_FRAMES):
            frame = av.VideoFrame.from_ndarray(blank, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def best_time(make: Callable[[Path, int, int], None], width: int, height: int,
              repeat: int, workdir: Path) -> float:
    times = []
    for n in range(repeat):
        path = workdir / f"{make.__name__}-{width}x{height}-{n}.mp4"
        start = time.perf_counter()
        make(path, width, height)
        times.append(time.perf_counter() - start)
        path.unlink()
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    args = parser.parse_args()
    print(f"{N_FRAMES} frames @ {FPS} fps, libx264 preset={PRESET} crf={CRF}, "
          f"best of {args.repeat}")
    print(f"{'size (WxH)':>12} {'preview s':>10} {'blank s':>9} {'ratio':>7} {'preview fps':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in SIZES:
            preview = best_time(preview_clip, width, height, args.repeat, Path(tmp))
            blank = best_time(blank_clip, width, height, args.repeat, Path(tmp))
            print(f"{f'{width}x{height}':>12} {preview:>10.2f} {blank:>9.2f} "
                  f"{preview / blank:>7.2f} {N_FRAMES / preview:>12.0f}")


if __name__ == "__main__":
    main()
