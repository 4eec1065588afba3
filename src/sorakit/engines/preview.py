"""The preview engine: an honest procedural placeholder, not a video model.

It draws the prompt over an animated pattern seeded from ``(prompt, seed)`` so the whole
pipeline (queue, worker, encoder, downloads) can be exercised without a GPU. Everything that
does not change between frames (coordinate grids, the text overlay) is computed once per job
so each frame costs a handful of vectorised numpy operations.

Frames are drawn in float32 on a planar canvas (one contiguous (H, W) plane per channel, so every
numpy loop runs over long contiguous rows) and interleaved into HxWx3 uint8 only at the end. They
are rendered on a thread of their own, a few frames ahead of the consumer (:class:`_RenderAhead`):
numpy releases the GIL in its loops and x264 releases it while encoding, so drawing frame i+1
overlaps encoding frame i. Everything the engine tells its context (progress, cancellation, sound)
still happens on the consumer's thread, in the same order as before.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sorakit.engines.base import AudioTrack, Engine, RenderContext, RenderJob
from sorakit.media.frames import sample

NOTE = ("sorakit preview engine: a procedural placeholder that draws the prompt over an "
        "animated pattern; it is not a video model.")
# the bundled default font (Aileron) has no em dash glyph, so the drawn label uses a hyphen
LABEL = "sorakit preview - placeholder, not a model"
ELLIPSIS = "…"
#: longest prompt prefix considered for drawing; the rest could never fit on screen anyway
MAX_DRAWN_CHARS = 2000
#: how long a pacing sleep may last before checking for cancellation again
PACE_SLICE_S = 0.1
#: frames the render thread may have ready ahead of the consumer (each one uint8 frame in memory)
RENDER_AHEAD = 3
#: how often a render thread blocked on a full queue (or a consumer waiting on an empty one)
#: looks whether the other side has gone
_HANDOFF_POLL_S = 0.05
#: how long closing waits for the render thread to finish the frame it is drawing
_JOIN_TIMEOUT_S = 10.0

log = logging.getLogger("sorakit.engines")

Rect = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)


class PreviewEngine(Engine):
    name = "preview"
    placeholder = True
    progress_share = 0.0  # rendering is cheap; the worker's progress follows encoding
    supports_image = True  # an uploaded image becomes the first frame
    sound_label = "sorakit preview - placeholder tones, not a model"

    def __init__(self, pace_seconds: float = 0.0) -> None:
        if pace_seconds < 0:
            raise ValueError("pace_seconds must be >= 0")
        self.pace_seconds = pace_seconds

    def operations(self) -> frozenset[str]:
        return frozenset({"generate", "image", "remix", "extend", "audio"})

    def frames(self, job: RenderJob, ctx: RenderContext) -> Iterator[np.ndarray]:
        """Text or image to video; a remix paints the new scene over the source's frames
        (``1 - strength`` of the source shows through; strength is 0.4 by default); an extension
        fades from the source's last frame into the new scene over its first second, so the join
        shows no jump."""
        if job.audio:
            ctx.audio(placeholder_sound(job.prompt, job.seed, job.n_frames / job.fps))
        pacer = _Pacer(self.pace_seconds, job.n_frames, ctx)
        # Only drawing happens on the render thread; pacing, cancellation and progress stay here,
        # on the consumer's thread, exactly where they were when frames were drawn in line.
        with _RenderAhead(self.draw(job), name=f"sorakit-preview-{job.task_id}") as ahead:
            for i in range(job.n_frames):
                pacer.wait_before(i)
                ctx.check_cancel()
                yield ahead.next_frame()
                ctx.progress((i + 1) / job.n_frames)

    def draw(self, job: RenderJob) -> Iterator[np.ndarray]:
        """The job's frames, drawn in line on the calling thread (no pacing, no context): what
        :meth:`frames` hands out, frame for frame."""
        scene = AnimatedScene(job.width, job.height, job.fps, scene_rng(job.prompt, job.seed))
        overlay = PromptOverlay(job.prompt, job.width, job.height)
        under = self._under(job)
        first = None
        if job.image and job.operation == "generate":
            first = fit_image(job.image, job.width, job.height)
        try:
            for i in range(job.n_frames):
                if i == 0 and first is not None:
                    yield first
                    continue
                planes = scene.render_planes(i)
                if under is not None and job.operation == "remix":  # beneath the label: it stays legible
                    _mix(planes, *under(i))
                overlay.apply_planes(planes)
                _draw_progress_bar(planes, (i + 1) / job.n_frames)
                if under is not None and job.operation == "extend":  # the whole new frame fades in
                    _mix(planes, *under(i))
                yield _interleave(planes)
        finally:
            close = getattr(under, "close", None)
            if close is not None:
                close()  # a remix's source decoder, on the thread that used it

    @staticmethod
    def _under(job: RenderJob) -> _Under | None:
        """For remix and extend: ``index -> (source frame as planar float32, how much of it shows)``."""
        if job.operation == "remix" and job.source is not None:
            keep = 1.0 - (0.4 if job.strength is None else job.strength)
            frames = sample(job.source, job.n_frames, job.width, job.height)
            return _Under(lambda i: (_planar(next(frames)), keep), frames.close)
        if job.operation == "extend" and job.image is not None:
            last = _planar(fit_image(job.image, job.width, job.height))
            ramp = max(job.fps, 1)  # one second
            return _Under(lambda i: (last, max(1.0 - (i + 1) / ramp, 0.0)))
        return None

    def describe(self, operation: str | None = None) -> dict[str, Any]:
        return {"name": self.name, "placeholder": self.placeholder, "note": NOTE, "sound": SOUND_LABEL}


#: the audio stream's title in every preview MP4: the sound's own label
SOUND_LABEL = PreviewEngine.sound_label
SOUND_RATE = 48_000
#: a pentatonic scale (Hz): whatever the prompt, the chord is consonant, plainly synthetic
NOTES = (196.0, 220.0, 261.63, 293.66, 329.63, 392.0, 440.0, 523.25, 587.33, 659.26)


def placeholder_sound(prompt: str, seed: int | None, seconds: float) -> AudioTrack:
    """A deterministic sound for ``(prompt, seed)``: a three-note chord of pure sine tones that
    swells and fades every few seconds, with a short high beep on every whole second. Nobody will
    mistake it for a model's sound; the MP4 also names it (:data:`SOUND_LABEL`)."""
    rng = scene_rng(prompt, seed)
    n = max(round(seconds * SOUND_RATE), 1)
    t = np.arange(n, dtype=np.float32) / SOUND_RATE
    notes = rng.choice(NOTES, size=3, replace=False)
    period = float(rng.uniform(2.0, 4.0))
    swell = 0.55 + 0.45 * np.sin(2 * np.pi * t / period + float(rng.uniform(0, 2 * np.pi)))
    chord = sum(np.sin(2 * np.pi * f * t + float(rng.uniform(0, 2 * np.pi))) for f in notes) / 3
    left = 0.25 * swell * chord
    beep = (t % 1.0) < 0.05
    left = left + 0.15 * beep * np.sin(2 * np.pi * 1760.0 * t)
    pan = float(rng.uniform(0.6, 1.0))
    samples = np.stack([left, left * pan]).astype(np.float32)
    fade = min(n, SOUND_RATE // 100)  # 10 ms in and out: no click at the ends
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    samples[:, :fade] *= ramp
    samples[:, n - fade:] *= ramp[::-1]
    return AudioTrack(samples, SOUND_RATE)


def fit_image(path, width: int, height: int) -> np.ndarray:
    """The image scaled to cover ``width`` x ``height`` and centre-cropped, as RGB uint8."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    scale = max(width / rgb.width, height / rgb.height)
    size = (max(width, round(rgb.width * scale)), max(height, round(rgb.height * scale)))
    resized = rgb.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return np.asarray(resized.crop((left, top, left + width, top + height)), dtype=np.uint8)


def scene_rng(prompt: str, seed: int | None) -> np.random.Generator:
    """A generator determined by ``(prompt, seed)``; ``seed=None`` depends on the prompt only."""
    seed_part = "prompt-only" if seed is None else f"seed={seed}"
    key = f"sorakit-preview\x00{prompt}\x00{seed_part}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(key).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


class _Pacer:
    """Spreads frames over at least ``pace_seconds`` of wall time, staying cancellable."""

    def __init__(self, pace_seconds: float, n_frames: int, ctx: RenderContext) -> None:
        self.pace_seconds, self.n_frames, self.ctx = pace_seconds, n_frames, ctx
        self.start = time.monotonic()

    def wait_before(self, index: int) -> None:
        if self.pace_seconds <= 0:
            return
        deadline = self.start + self.pace_seconds * index / self.n_frames
        while (left := deadline - time.monotonic()) > 0:
            self.ctx.check_cancel()
            time.sleep(min(left, PACE_SLICE_S))


class _RenderAhead:
    """Runs a frame iterator on a thread of its own, at most ``depth`` frames ahead of the consumer.

    The iterator runs wholly on that thread, from its first step to its ``close`` (so it may hold
    state such as an open decoder). :meth:`next_frame` hands the frames out in order and re-raises
    whatever the iterator raised. Leaving the ``with`` block (the consumer finished, failed, was
    cancelled or closed its generator early) stops the thread after the frame it is drawing, closes
    the iterator there and joins the thread, so nothing outlives the consumer.
    """

    _END = object()

    def __init__(self, frames: Iterator[np.ndarray], *, depth: int = RENDER_AHEAD,
                 name: str = "sorakit-preview-render") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(frames,), name=name, daemon=True)

    def __enter__(self) -> _RenderAhead:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def next_frame(self) -> np.ndarray:
        while True:
            try:
                frame, error = self._queue.get(timeout=_HANDOFF_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the preview's render thread ended without a frame") from None
                continue
            if error is not None:
                raise error
            if frame is self._END:
                raise RuntimeError("the preview's render thread ran out of frames")
            return frame

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is None:  # never started
            return
        self._drain()  # a thread blocked on a full queue gets its frame in, sees the stop, returns
        self._thread.join(_JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("%s: still drawing %.0f s after it was told to stop", self._thread.name,
                        _JOIN_TIMEOUT_S)
        self._drain()

    def _run(self, frames: Iterator[np.ndarray]) -> None:
        try:
            for frame in frames:
                if not self._put((frame, None)):
                    return
            self._put((self._END, None))
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            self._put((None, exc))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _put(self, item: tuple) -> bool:
        """Queue ``item`` unless the consumer has gone; False when it has (draw nothing more)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_HANDOFF_POLL_S)
            except queue.Full:
                continue
            return not self._stop.is_set()
        return False

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


class _Under:
    """What shows beneath (remix) or through (extend) a new frame: ``index -> (planes, weight)``."""

    def __init__(self, at: Callable[[int], tuple[np.ndarray, float]],
                 close: Callable[[], None] | None = None) -> None:
        self._at, self._close = at, close

    def __call__(self, index: int) -> tuple[np.ndarray, float]:
        return self._at(index)

    def close(self) -> None:
        if self._close is not None:
            self._close()


def _planar(frame: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 frame as a contiguous (3, H, W) float32 array."""
    return np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32)


def _mix(planes: np.ndarray, source: np.ndarray, weight: float) -> None:
    """``planes += (source - planes) * weight``, in place."""
    if weight == 0.0:
        return  # adding (source - planes) * 0 changes no value
    planes += (source - planes) * weight


def _interleave(planes: np.ndarray) -> np.ndarray:
    """The (3, H, W) float32 canvas as a new HxWx3 uint8 frame (values truncated, as astype does)."""
    out = np.empty(planes.shape[1:] + (3,), dtype=np.uint8)
    for c in range(3):
        np.copyto(out[..., c], planes[c], casting="unsafe")
    return out


# --- the animated scene ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Wave:
    """Per-channel travelling sine along one axis: ``amp * sin(2π(freq·u − speed·t) + phase)``."""

    freq: np.ndarray
    speed: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator) -> _Wave:
        speed = rng.uniform(0.04, 0.12, 3) * rng.choice([-1.0, 1.0], 3)
        return cls(freq=rng.uniform(0.3, 1.2, 3), speed=speed,
                   phase=rng.uniform(0, 2 * math.pi, 3), amp=rng.uniform(20, 35, 3))

    def along(self, u: np.ndarray, t: float) -> np.ndarray:
        """Values for the positions ``u`` (shape (n, 1)) at time ``t``: shape (n, 3)."""
        angle = 2 * math.pi * (u * self.freq - self.speed * t) + self.phase
        return (self.amp * np.sin(angle)).astype(np.float32)


@dataclass(frozen=True)
class _Orbit:
    """A smooth back-and-forth path: ``centre + amp * sin(2π·freq·t + phase)`` per axis."""

    centre: tuple[float, float]
    amp: tuple[float, float]
    freq: tuple[float, float]
    phase: tuple[float, float]

    @classmethod
    def random(cls, rng: np.random.Generator) -> _Orbit:
        return cls(centre=tuple(rng.uniform(0.3, 0.7, 2)), amp=tuple(rng.uniform(0.15, 0.4, 2)),
                   freq=tuple(rng.uniform(0.05, 0.2, 2) * rng.choice([-1, 1], 2)),
                   phase=tuple(rng.uniform(0, 2 * math.pi, 2)))

    def at(self, t: float) -> tuple[float, float]:
        """Position (x, y) as fractions of the frame at time ``t``."""
        return tuple(c + a * math.sin(2 * math.pi * f * t + p)
                     for c, a, f, p in zip(self.centre, self.amp, self.freq, self.phase))


@dataclass(frozen=True)
class _Circle:
    orbit: _Orbit
    radius: float  # fraction of the shorter side
    colour: np.ndarray
    alpha: float

    def draw(self, planes: np.ndarray, t: float) -> None:
        height, width = planes.shape[1:]
        fx, fy = self.orbit.at(t)
        cx, cy, r = fx * width, fy * height, max(self.radius * min(width, height), 1.0)
        soft = max(r * 0.35, 1.0)
        rect = _clip_rect((int(cy - r) - 1, int(cy + r) + 2, int(cx - r) - 1, int(cx + r) + 2),
                          height, width)
        if rect is None:
            return
        y0, y1, x0, x1 = rect
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
        coverage = np.clip((r - np.sqrt(dx * dx + dy * dy)) / soft, 0.0, 1.0)
        _blend(planes[:, y0:y1, x0:x1], self.colour, coverage * self.alpha)


@dataclass(frozen=True)
class _Bar:
    orbit: _Orbit
    half_width: float  # fraction of the axis it moves along
    vertical: bool
    colour: np.ndarray
    alpha: float

    def draw(self, planes: np.ndarray, t: float) -> None:
        size = planes.shape[2] if self.vertical else planes.shape[1]
        centre, half = self.orbit.at(t)[0] * size, max(self.half_width * size, 1.0)
        soft = max(half * 0.5, 1.0)
        lo, hi = max(int(centre - half) - 1, 0), min(int(centre + half) + 2, size)
        if lo >= hi:
            return
        offset = np.arange(lo, hi, dtype=np.float32) + 0.5 - centre
        coverage = np.clip((half - np.abs(offset)) / soft, 0.0, 1.0) * self.alpha
        if self.vertical:
            _blend(planes[:, :, lo:hi], self.colour, coverage[None, :])
        else:
            _blend(planes[:, lo:hi], self.colour, coverage[:, None])


def _blend(region: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> None:
    """``region = region·(1−alpha) + colour·alpha`` in place; stays within [0, 255].

    ``region`` is planar, (3, h, w): each plane's rows are contiguous, so numpy's inner loops are
    long. ``alpha`` is 2-D and broadcasts to (h, w); it may be float64 (the shapes' positions are),
    and the product is then float64 before it is added: frames depend on that rounding, keep it.
    """
    for c in range(3):
        plane = region[c]
        plane += (colour[c] - plane) * alpha


class AnimatedScene:
    """A drifting colour gradient with a few soft shapes moving over it."""

    def __init__(self, width: int, height: int, fps: int, rng: np.random.Generator) -> None:
        self.fps = fps
        self.xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[:, None]
        self.ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
        self.base = rng.uniform(70, 130, 3).astype(np.float32)
        self.wave_x, self.wave_y = _Wave.random(rng), _Wave.random(rng)
        self.shapes = _random_shapes(rng)
        self.planes = np.empty((3, height, width), dtype=np.float32)

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` as a float32 (H, W, 3) array in [0, 255] (a view of :meth:`render_planes`'s
        buffer, reused between calls)."""
        return self.render_planes(index).transpose(1, 2, 0)

    def render_planes(self, index: int) -> np.ndarray:
        """Frame ``index`` as a planar float32 (3, H, W) array in [0, 255]; reused between calls."""
        t = index / self.fps
        rows = (self.base + self.wave_y.along(self.ys, t)).T  # (3, H)
        cols = np.ascontiguousarray(self.wave_x.along(self.xs, t).T)  # (3, W)
        for c in range(3):
            np.add(rows[c, :, None], cols[c, None, :], out=self.planes[c])
        for shape in self.shapes:
            shape.draw(self.planes, t)
        return self.planes


def _random_shapes(rng: np.random.Generator) -> list[_Circle | _Bar]:
    def colour() -> np.ndarray:
        return rng.uniform(0, 255, 3).astype(np.float32)

    bars = [_Bar(_Orbit.random(rng), float(rng.uniform(0.03, 0.08)), bool(rng.integers(2)),
                 colour(), float(rng.uniform(0.25, 0.45)))
            for _ in range(int(rng.integers(1, 3)))]
    circles = [_Circle(_Orbit.random(rng), float(rng.uniform(0.08, 0.2)), colour(),
                       float(rng.uniform(0.4, 0.75)))
               for _ in range(int(rng.integers(3, 6)))]
    return bars + circles


def _draw_progress_bar(planes: np.ndarray, fraction: float) -> None:
    height, width = planes.shape[1:]
    bar_h = max(2, height // 100)
    filled = round(width * fraction)
    planes[:, -bar_h:, :filled] = 235.0
    planes[:, -bar_h:, filled:] *= 0.35


# --- the text overlay -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """One greyscale element composited as ``value·keep + add`` inside ``rect``."""

    rect: Rect
    keep: np.ndarray  # (h, w)
    add: np.ndarray  # (h, w)


class PromptOverlay:
    """The prompt in a translucent box plus the placeholder label, rendered once per job."""

    def __init__(self, prompt: str, width: int, height: int) -> None:
        size = _font_size(width, height)
        layers = [_label_layer(size, width, height), _prompt_layer(prompt, size, width, height)]
        layers = [layer for layer in layers if layer is not None]
        self.patches = _flatten(layers, width, height)

    @property
    def rects(self) -> list[Rect]:
        """Frame regions the overlay touches."""
        return [rect for rect, _, _ in self.patches]

    def apply(self, canvas: np.ndarray) -> None:
        """Composite over an (H, W, 3) float32 canvas, in place."""
        self.apply_planes(canvas.transpose(2, 0, 1))

    def apply_planes(self, planes: np.ndarray) -> None:
        """Composite over a planar (3, H, W) float32 canvas, in place."""
        for (y0, y1, x0, x1), keep, add in self.patches:
            region = planes[:, y0:y1, x0:x1]
            region *= keep  # (h, w): the same for every plane
            region += add


def _font_size(width: int, height: int) -> int:
    return int(min(max(round(min(width, height) / 16), 8), 72))


def _load_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent + max(1, font.size // 6)


def _prompt_layer(prompt: str, size: int, width: int, height: int) -> _Layer | None:
    font, pad, margin = _load_font(size), max(size // 2, 2), max(width // 20, 1)
    line_h = _line_height(font)
    max_lines = max(1, (height // 2 - 2 * pad) // line_h)
    lines = wrap_text(_drawable(prompt), font, width - 2 * (margin + pad), max_lines)
    if not lines:
        return None
    box_w = int(max(font.getlength(line) for line in lines)) + 2 * pad
    box_h = len(lines) * line_h + 2 * pad
    origin = ((height - box_h) // 2, (width - box_w) // 2)
    return _text_box(lines, font, origin, (box_h, box_w), pad, box_alpha=0.6, ink=245)


def _label_layer(size: int, width: int, height: int) -> _Layer | None:
    font = _load_font(max(round(size * 0.55), 7))
    pad = max(font.size // 3, 1)
    box = (_line_height(font) + 2 * pad, int(font.getlength(LABEL)) + 2 * pad)
    return _text_box([LABEL], font, (pad, pad), box, pad, box_alpha=0.5, ink=220)


def _text_box(lines: list[str], font: ImageFont.FreeTypeFont, origin: tuple[int, int],
              box: tuple[int, int], pad: int, *, box_alpha: float, ink: int) -> _Layer:
    """White-ish ``lines`` over a dark translucent box whose top-left corner is ``origin``."""
    mask = Image.new("L", (box[1], box[0]), 0)
    draw = ImageDraw.Draw(mask)
    for n, line in enumerate(lines):
        draw.text((pad, pad + n * _line_height(font)), line, font=font, fill=255)
    text = np.asarray(mask, dtype=np.float32) / 255.0
    keep = (1.0 - box_alpha) * (1.0 - text)
    rect = (origin[0], origin[0] + box[0], origin[1], origin[1] + box[1])
    return _Layer(rect, keep, ink * text)


def _drawable(prompt: str) -> str:
    """The prompt as one line of printable text (lone surrogates would break the renderer)."""
    text = prompt[:MAX_DRAWN_CHARS].encode("utf-8", "replace").decode("utf-8")
    return " ".join(text.split())


def wrap_text(text: str, font: ImageFont.FreeTypeFont, max_width: int,
              max_lines: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; overflow ends the last line with an ellipsis."""
    lines: list[str] = []
    line = ""
    for piece in _pieces(text.split(), font, max_width):
        candidate = f"{line} {piece}" if line else piece
        if line and font.getlength(candidate) > max_width:
            lines.append(line)
            candidate = piece
            if len(lines) == max_lines:
                return _with_ellipsis(lines, font, max_width)
        line = candidate
    return lines + [line] if line else lines


def _pieces(words: list[str], font: ImageFont.FreeTypeFont, max_width: int) -> Iterator[str]:
    """Words, with any word wider than a line (a URL, unspaced CJK) cut into line-sized chunks."""
    for word in words:
        while font.getlength(word) > max_width and len(word) > 1:
            cut = _fitting_prefix(word, font, max_width)
            yield word[:cut]
            word = word[cut:]
        yield word


def _fitting_prefix(text: str, font: ImageFont.FreeTypeFont, max_width: int) -> int:
    """Length of the longest prefix of ``text`` that fits (at least one character)."""
    lo, hi = 1, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if font.getlength(text[:mid]) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _with_ellipsis(lines: list[str], font: ImageFont.FreeTypeFont, max_width: int) -> list[str]:
    last = lines[-1]
    while last and font.getlength(last + ELLIPSIS) > max_width:
        last = last[:-1]
    return lines[:-1] + [last.rstrip() + ELLIPSIS]


def _flatten(layers: list[_Layer], width: int, height: int) -> list[tuple[Rect, np.ndarray,
                                                                           np.ndarray]]:
    """Composite the layers into full-frame keep/add planes and crop the touched regions.

    Layers may overlap on tiny frames; compositing them first and cropping the merged regions
    keeps every pixel's overlay applied exactly once.
    """
    keep = np.ones((height, width), dtype=np.float32)
    add = np.zeros((height, width), dtype=np.float32)
    rects = []
    for layer in layers:
        rect = _clip_rect(layer.rect, height, width)
        if rect is None:
            continue
        _composite(keep, add, layer, rect)
        rects.append(rect)
    return [(r, keep[_slices(r)].copy(), add[_slices(r)].copy()) for r in _merge_overlapping(rects)]


def _composite(keep: np.ndarray, add: np.ndarray, layer: _Layer, rect: Rect) -> None:
    # applying (k1, a1) then (k2, a2): v·k1·k2 + a1·k2 + a2
    y0, y1, x0, x1 = rect
    ly, lx = y0 - layer.rect[0], x0 - layer.rect[2]
    k2 = layer.keep[ly:ly + y1 - y0, lx:lx + x1 - x0]
    a2 = layer.add[ly:ly + y1 - y0, lx:lx + x1 - x0]
    keep[y0:y1, x0:x1] *= k2
    add[y0:y1, x0:x1] = add[y0:y1, x0:x1] * k2 + a2


def _slices(rect: Rect) -> tuple[slice, slice]:
    return slice(rect[0], rect[1]), slice(rect[2], rect[3])


def _clip_rect(rect: Rect, height: int, width: int) -> Rect | None:
    y0, y1, x0, x1 = max(rect[0], 0), min(rect[1], height), max(rect[2], 0), min(rect[3], width)
    return (y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None


def _merge_overlapping(rects: list[Rect]) -> list[Rect]:
    merged: list[Rect] = []
    for rect in rects:
        while (other := next((m for m in merged if _overlap(m, rect)), None)) is not None:
            merged.remove(other)
            rect = (min(rect[0], other[0]), max(rect[1], other[1]),
                    min(rect[2], other[2]), max(rect[3], other[3]))
        merged.append(rect)
    return merged


def _overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]
