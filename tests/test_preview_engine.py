"""The preview engine, run for real; frames are checked directly and through a real MP4."""

from __future__ import annotations

import threading
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFont

from sorakit.engines.base import Cancelled, Engine, RenderJob
from sorakit.engines.preview import (
    AnimatedScene,
    PreviewEngine,
    PromptOverlay,
    _font_size,
    scene_rng,
    wrap_text,
)
from sorakit.media.encode import encode_mp4, probe

PROMPT = "A corgi surfing a giant wave at sunset, cinematic lighting, drone shot"
NON_ASCII = "東京の夜景 🌃🎬 café naïve — ünïcödé \u200b\ud800 end"


class Ctx:
    """A minimal RenderContext: records progress, raises Cancelled once ``cancelled`` is set."""

    def __init__(self) -> None:
        self.fractions: list[float] = []
        self.cancelled = False
        self.cancel_seen_at: float | None = None

    def progress(self, fraction: float) -> None:
        self.fractions.append(fraction)

    def check_cancel(self) -> None:
        if self.cancelled:
            self.cancel_seen_at = time.monotonic()
            raise Cancelled()


def job(prompt: str = PROMPT, *, width: int = 80, height: int = 48, n_frames: int = 12,
        seed: int | None = 1) -> RenderJob:
    return RenderJob(task_id="t", prompt=prompt, width=width, height=height,
                     n_frames=n_frames, seed=seed)


def render(j: RenderJob, engine: Engine | None = None) -> list[np.ndarray]:
    return list((engine or PreviewEngine()).frames(j, Ctx()))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_class_attributes_and_describe() -> None:
    engine = PreviewEngine()
    assert (engine.name, engine.placeholder, engine.progress_share) == ("preview", True, 0.0)
    assert engine.describe() == {
        "name": "preview",
        "placeholder": True,
        "note": "sorakit preview engine: a procedural placeholder that draws the prompt over "
                "an animated pattern; it is not a video model.",
        "sound": "sorakit preview - placeholder tones, not a model",
    }


def test_negative_pace_rejected() -> None:
    with pytest.raises(ValueError):
        PreviewEngine(pace_seconds=-1)


def test_exact_count_shape_dtype_and_progress() -> None:
    ctx = Ctx()
    frames = list(PreviewEngine().frames(job(n_frames=17, width=80, height=48), ctx))
    assert len(frames) == 17
    assert all(f.shape == (48, 80, 3) and f.dtype == np.uint8 for f in frames)
    assert ctx.fractions == sorted(ctx.fractions) and ctx.fractions[-1] == pytest.approx(1.0)


def test_deterministic_for_same_prompt_and_seed() -> None:
    a, b = render(job(seed=5)), render(job(seed=5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_seed_none_is_deterministic_per_prompt() -> None:
    a, b = render(job(seed=None)), render(job(seed=None))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert mean_abs_diff(a[0], render(job(seed=0))[0]) > 5


def test_different_seed_or_prompt_looks_different() -> None:
    base = render(job(seed=1, width=160, height=96))[0]
    other_seed = render(job(seed=2, width=160, height=96))[0]
    other_prompt = render(job("A lighthouse in a storm", seed=1, width=160, height=96))[0]
    assert mean_abs_diff(base, other_seed) > 5
    assert mean_abs_diff(base, other_prompt) > 5


def test_consecutive_frames_differ() -> None:
    frames = render(job(n_frames=30, width=160, height=96))
    for a, b in zip(frames, frames[1:]):
        assert not np.array_equal(a, b)
    assert mean_abs_diff(frames[0], frames[-1]) > 2  # it moves, not just flickers


def test_prompt_text_is_drawn_over_the_scene() -> None:
    j = job(width=352, height=640, n_frames=1)
    frame = render(j)[0]
    scene = AnimatedScene(j.width, j.height, j.fps, scene_rng(j.prompt, j.seed)).render(0)
    scene = scene.astype(np.uint8)
    rects = PromptOverlay(j.prompt, j.width, j.height).rects
    assert len(rects) == 2  # the corner label and the prompt box
    touched = np.zeros(frame.shape[:2], bool)
    for y0, y1, x0, x1 in rects:
        touched[y0:y1, x0:x1] = True
    touched[-max(2, j.height // 100):] = True  # progress bar
    # untouched pixels are the bare scene; the prompt box is darkened and carries bright text
    np.testing.assert_array_equal(frame[~touched], scene[~touched])
    y0, y1, x0, x1 = max(rects, key=lambda r: (r[1] - r[0]) * (r[3] - r[2]))
    box, under = frame[y0:y1, x0:x1].astype(int), scene[y0:y1, x0:x1].astype(int)
    assert box.mean() < under.mean()
    assert (box.min(axis=2) > 200).mean() > 0.02  # white glyph pixels
    assert (box.max(axis=2) < 80).mean() > 0.3  # dark backdrop


def test_long_prompt_truncated_to_half_the_frame() -> None:
    width, height = 352, 640
    overlay = PromptOverlay("word " * 2000, width, height)
    y0, y1, x0, x1 = max(overlay.rects, key=lambda r: r[1] - r[0])
    assert (y1 - y0) <= height / 2
    assert (y1 - y0) * (x1 - x0) <= width * height / 2


def test_wrap_text_fits_width_and_ends_with_ellipsis() -> None:
    font = ImageFont.load_default(size=20)
    lines = wrap_text("lorem ipsum dolor sit amet " * 40, font, 200, 4)
    assert len(lines) == 4
    assert lines[-1].endswith("…")
    assert all(font.getlength(line) <= 200 for line in lines)
    assert wrap_text("short prompt", font, 200, 4) == ["short prompt"]
    assert wrap_text("   ", font, 200, 4) == []


def test_wrap_text_breaks_unspaced_text() -> None:
    font = ImageFont.load_default(size=20)
    lines = wrap_text("x" * 300, font, 100, 50)
    assert len(lines) > 1 and "".join(lines) == "x" * 300
    assert all(font.getlength(line) <= 100 for line in lines)


@pytest.mark.parametrize("width,height", [(64, 64), (16, 16), (2, 2), (64, 36)])
@pytest.mark.parametrize("prompt", [PROMPT, "x" * 5000, NON_ASCII, "   ", ""])
def test_tiny_and_awkward_inputs(width: int, height: int, prompt: str) -> None:
    frames = render(job(prompt, width=width, height=height, n_frames=2))
    assert [f.shape for f in frames] == [(height, width, 3)] * 2


def test_non_ascii_prompt_is_drawn() -> None:
    j = job(NON_ASCII, width=352, height=640, n_frames=1)
    frame = render(j)[0]
    scene = AnimatedScene(j.width, j.height, j.fps, scene_rng(j.prompt, j.seed)).render(0)
    y0, y1, x0, x1 = max(PromptOverlay(j.prompt, j.width, j.height).rects,
                         key=lambda r: (r[1] - r[0]) * (r[3] - r[2]))
    assert mean_abs_diff(frame[y0:y1, x0:x1], scene.astype(np.uint8)[y0:y1, x0:x1]) > 20


def test_cancel_mid_stream_is_prompt() -> None:
    ctx = Ctx()
    frames = PreviewEngine().frames(job(n_frames=100), ctx)
    for _ in range(5):
        next(frames)
    ctx.cancelled = True
    start = time.monotonic()
    with pytest.raises(Cancelled):
        next(frames)
    assert time.monotonic() - start < 0.1


def test_pace_sets_minimum_wall_time() -> None:
    start = time.monotonic()
    frames = render(job(n_frames=10), PreviewEngine(pace_seconds=0.5))
    assert len(frames) == 10
    assert time.monotonic() - start >= 0.45


def test_cancel_during_pacing_lands_quickly() -> None:
    ctx = Ctx()
    frames = PreviewEngine(pace_seconds=20.0).frames(job(n_frames=10), ctx)
    next(frames)
    cancel_at: list[float] = []

    def cancel() -> None:
        cancel_at.append(time.monotonic())
        ctx.cancelled = True

    threading.Timer(0.2, cancel).start()
    with pytest.raises(Cancelled):
        next(frames)  # frame 1 is due 2 s after the start: the engine is sleeping
    assert ctx.cancel_seen_at is not None and ctx.cancel_seen_at - cancel_at[0] < 0.3


def test_end_to_end_portrait_clip(tmp_path: Path) -> None:
    j = job(width=352, height=640, n_frames=300)
    path = tmp_path / "preview.mp4"
    seen: list[int] = []
    result = encode_mp4(PreviewEngine().frames(j, Ctx()), path, width=352, height=640,
                        on_frame=seen.append, expected_frames=j.n_frames)
    assert result.n_frames == 300 and seen[-1] == 300
    info = probe(path)
    assert (info.n_frames, info.width, info.height) == (300, 352, 640)
    assert info.duration_s == pytest.approx(10.0, abs=0.05)
    middle = next(islice(PreviewEngine().frames(j, Ctx()), 150, None))
    np.testing.assert_array_equal(result.thumbnail_frame, middle)


OFFICIAL_SIZES = [(720, 1280), (1280, 720), (1024, 1792), (1792, 1024), (1920, 1080), (1080, 1920)]


@pytest.mark.parametrize("width,height", OFFICIAL_SIZES)
def test_official_sizes_lay_the_text_out_inside_the_frame(width: int, height: int) -> None:
    j = job(PROMPT * 3, width=width, height=height, n_frames=1)
    frame = render(j)[0]
    assert frame.shape == (height, width, 3)
    label, box = sorted(PromptOverlay(j.prompt, width, height).rects)
    assert label[0] >= 0 and label[2] >= 0 and label[1] < height // 8  # the corner label, at the top
    y0, y1, x0, x1 = box  # the prompt box: centred, inside the frame, wrapped to several lines
    assert 0 < y0 < y1 < height and 0 < x0 < x1 < width
    assert abs((y0 + y1) - height) <= 1 and abs((x0 + x1) - width) <= 1
    assert x1 - x0 > width * 0.6 and y1 - y0 > 3 * _font_size(width, height)


def test_exact_plan_at_1792x1024_for_4_seconds(tmp_path: Path) -> None:
    plan = PreviewEngine().plan_exact(1792, 1024, 4)
    j = RenderJob("t", PROMPT, plan.width, plan.height, plan.n_frames, plan.fps, seed=1)
    path = tmp_path / "wide.mp4"
    result = encode_mp4(PreviewEngine().frames(j, Ctx()), path, width=plan.width, height=plan.height,
                        fps=plan.fps, expected_frames=plan.n_frames)
    info = probe(path)
    assert result.n_frames == info.n_frames == 120
    assert (info.width, info.height, info.fps) == (1792, 1024, 30.0)
    assert info.duration_s == pytest.approx(4.0, abs=0.01)
