"""The preview engine, run for real; frames are checked directly and through a real MP4."""

from __future__ import annotations

import threading
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont

from sorakit.engines.base import Cancelled, Engine, RenderJob
from sorakit.engines.preview import (
    RENDER_AHEAD,
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
    """A minimal RenderContext: records progress (and the threads it is called from), raises
    Cancelled once ``cancelled`` is set."""

    def __init__(self) -> None:
        self.fractions: list[float] = []
        self.cancelled = False
        self.cancel_seen_at: float | None = None
        self.threads: set[int] = set()
        self.tracks: list = []

    def progress(self, fraction: float) -> None:
        self.threads.add(threading.get_ident())
        self.fractions.append(fraction)

    def check_cancel(self) -> None:
        self.threads.add(threading.get_ident())
        if self.cancelled:
            self.cancel_seen_at = time.monotonic()
            raise Cancelled()

    def audio(self, track) -> None:
        self.threads.add(threading.get_ident())
        self.tracks.append(track)


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


# --- drawing on a thread of its own, ahead of the consumer --------------------------------------


def preview_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sorakit-preview")]


@pytest.fixture
def no_leaks():
    """Whatever the test does, no render thread is left running once it is over."""
    assert not preview_threads()
    yield
    assert not preview_threads()


@pytest.fixture
def sources(tmp_path: Path) -> tuple[Path, Path]:
    """An image and a short MP4 to start from, remix and extend."""
    image = tmp_path / "start.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (90, 140, 3), dtype=np.uint8)).save(image)
    video = tmp_path / "source.mp4"
    encode_mp4(PreviewEngine().frames(job("the source", width=96, height=64, n_frames=20), Ctx()),
               video, width=96, height=64, expected_frames=20)
    return image, video


def every_operation(image: Path, video: Path) -> list[RenderJob]:
    base = job(width=96, height=64, n_frames=14)
    return [
        base,
        RenderJob("t", PROMPT, 96, 64, 14, seed=2, image=image),
        RenderJob("t", PROMPT, 96, 64, 14, seed=2, operation="remix", source=video, strength=0.7),
        RenderJob("t", PROMPT, 96, 64, 40, seed=2, fps=30, operation="extend", image=image, source=video),
        RenderJob("t", PROMPT, 96, 64, 14, seed=2, audio=True),
    ]


def test_frames_are_the_frames_drawn_in_line_for_every_operation(sources, no_leaks) -> None:
    for j in every_operation(*sources):
        threaded = render(j)
        assert len(threaded) == j.n_frames
        in_line = list(PreviewEngine().draw(j))
        assert all(a.dtype == np.uint8 and a.flags.c_contiguous and np.array_equal(a, b)
                   for a, b in zip(threaded, in_line, strict=True)), j.operation
        assert all(np.array_equal(a, b) for a, b in zip(threaded, render(j), strict=True))


def test_two_renders_of_one_job_at_once_are_identical(sources, no_leaks) -> None:
    for j in every_operation(*sources):
        first, second = PreviewEngine().frames(j, Ctx()), PreviewEngine().frames(j, Ctx())
        pairs = [(next(first), next(second)) for _ in range(j.n_frames)]
        assert all(np.array_equal(a, b) for a, b in pairs)
        assert all(np.array_equal(a, c) for (a, _), c in zip(pairs, render(j), strict=True))


def test_drawing_runs_on_its_own_thread_and_the_context_on_the_consumers(monkeypatch, no_leaks) -> None:
    drawn_on: set[int] = set()
    render_planes = AnimatedScene.render_planes

    def spy(self, index):
        drawn_on.add(threading.get_ident())
        return render_planes(self, index)

    monkeypatch.setattr(AnimatedScene, "render_planes", spy)
    ctx = Ctx()
    j = RenderJob("t", PROMPT, 80, 48, 20, seed=1, audio=True)
    frames = PreviewEngine().frames(j, ctx)
    next(frames)
    assert [t.name for t in preview_threads()] == ["sorakit-preview-t"]
    rest = list(frames)
    assert len(rest) == 19 and len(ctx.tracks) == 1 and ctx.fractions[-1] == pytest.approx(1.0)
    assert drawn_on and threading.get_ident() not in drawn_on
    # progress, cancellation checks and the sound: all from the thread that consumes the frames
    assert ctx.threads == {threading.get_ident()}


def test_drawing_stays_a_few_frames_ahead(monkeypatch, no_leaks) -> None:
    drawn: list[int] = []
    render_planes = AnimatedScene.render_planes

    def spy(self, index):
        drawn.append(index)
        return render_planes(self, index)

    monkeypatch.setattr(AnimatedScene, "render_planes", spy)
    frames = PreviewEngine().frames(job(n_frames=100), Ctx())
    next(frames)
    # the consumer dawdles: the render thread fills the queue, draws one more frame, then waits
    deadline = time.monotonic() + 10
    while len(drawn) < 2 + RENDER_AHEAD and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(drawn) == 2 + RENDER_AHEAD
    start = time.monotonic()
    frames.close()  # the waiting thread stops at once, without drawing another frame
    assert time.monotonic() - start < 0.5 and not preview_threads()
    assert len(drawn) == 2 + RENDER_AHEAD


@pytest.mark.parametrize("end", ["exhausted", "cancelled", "closed", "dropped", "broken off"])
def test_no_render_thread_outlives_its_consumer(end: str, no_leaks) -> None:
    ctx = Ctx()
    frames = PreviewEngine().frames(job(width=160, height=96, n_frames=60), ctx)
    for _ in range(5):
        next(frames)
    assert len(preview_threads()) == 1
    if end == "exhausted":
        assert len(list(frames)) == 55
    elif end == "cancelled":
        ctx.cancelled = True
        with pytest.raises(Cancelled):
            next(frames)
    elif end == "closed":
        frames.close()
    elif end == "dropped":  # the consumer lets go without closing (an encoder that failed)
        del frames
    else:  # the consumer raised while the frames were being consumed
        with pytest.raises(ValueError):
            for i, _ in enumerate(frames):
                if i == 3:
                    raise ValueError("encoder broke")
        del frames
    assert not preview_threads()


def test_an_error_while_drawing_reaches_the_consumer(monkeypatch, no_leaks) -> None:
    render_planes = AnimatedScene.render_planes

    def failing(self, index):
        if index == 7:
            raise ZeroDivisionError("drawing frame 7 failed")
        return render_planes(self, index)

    monkeypatch.setattr(AnimatedScene, "render_planes", failing)
    ctx = Ctx()
    frames = PreviewEngine().frames(job(n_frames=20), ctx)
    got = [next(frames) for _ in range(7)]
    with pytest.raises(ZeroDivisionError, match="frame 7"):
        next(frames)
    assert len(got) == 7 and ctx.fractions[-1] == pytest.approx(7 / 20)
    assert not preview_threads()


def test_a_missing_image_fails_on_the_first_frame(tmp_path: Path, no_leaks) -> None:
    j = RenderJob("t", PROMPT, 80, 48, 10, seed=1, image=tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError):
        next(PreviewEngine().frames(j, Ctx()))


def test_cancel_mid_stream_stops_the_render_thread_promptly(no_leaks) -> None:
    ctx = Ctx()
    frames = PreviewEngine().frames(job(width=1280, height=720, n_frames=300), ctx)
    next(frames)
    ctx.cancelled = True
    start = time.monotonic()
    with pytest.raises(Cancelled):
        next(frames)
    # the thread finished the frame it was drawing, then stopped; nothing more was drawn
    assert time.monotonic() - start < 0.5 and not preview_threads()


def test_pace_holds_frame_by_frame(no_leaks) -> None:
    pace, n = 0.6, 6
    start = time.monotonic()
    frames = PreviewEngine(pace_seconds=pace).frames(job(n_frames=n), Ctx())
    yielded = [time.monotonic() - start for _ in frames]
    assert len(yielded) == n
    for i, at in enumerate(yielded):  # frame i not before its share of the pace
        assert at >= pace * i / n - 0.01
    assert time.monotonic() - start >= pace * (n - 1) / n
