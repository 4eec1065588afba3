"""H.264 MP4 encoding, WebP thumbnails, JPEG sprite sheets and probing, streaming through PyAV
and Pillow.

The encoder consumes frames one at a time so a render never holds a whole video in memory; it
keeps only the frame that becomes the draft's thumbnail and a few small tiles for the sprite sheet.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

#: x264 preset: previews encode on the CPU on the request's hot path, so favour speed
PRESET = "veryfast"
PIX_FMT = "yuv420p"
#: sprite sheet: at most this many frames, each scaled to this long side
SPRITE_TILES = 16
SPRITE_SIDE = 256


@dataclass(frozen=True)
class EncodeResult:
    n_frames: int
    width: int
    height: int
    thumbnail_frame: np.ndarray  # the middle frame (index n_frames // 2)
    #: up to SPRITE_TILES small frames spread evenly over the video, in order (the sprite sheet)
    tiles: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    n_frames: int
    fps: float
    codec: str
    pix_fmt: str
    duration_s: float


def encode_mp4(
    frames: Iterable[np.ndarray],
    path: Path,
    *,
    width: int,
    height: int,
    fps: int = 30,
    on_frame: Callable[[int], None] | None = None,
    crf: int = 23,
    expected_frames: int | None = None,
) -> EncodeResult:
    """Stream ``frames`` (HxWx3 uint8 RGB) into an H.264 MP4 at ``path``.

    ``expected_frames`` (or ``len(frames)`` when it has one) lets the middle frame be kept
    while streaming; without it the count is only known at the end, and keeping every
    candidate would mean buffering half the video, so the middle frame is decoded back.
    """
    _check_size(width, height)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("encode_mp4 needs at least one frame")
    expected = expected_frames if expected_frames is not None else _len_or_none(frames)
    middle_hint = expected // 2 if expected else None
    tiles = TileSampler(expected)
    with _open_output(path, width, height, fps, crf) as (container, stream):
        n, kept = _encode_all(itertools.chain([first], it), container, stream,
                              (height, width, 3), on_frame, middle_hint, tiles)
    thumb = kept if expected == n else _decode_frame_at(path, n // 2)
    return EncodeResult(n_frames=n, width=width, height=height, thumbnail_frame=thumb,
                        tiles=tiles.result())


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs even width and height, got {width}x{height}")


def _len_or_none(frames: Iterable[np.ndarray]) -> int | None:
    try:
        return len(frames)  # type: ignore[arg-type]
    except TypeError:
        return None


@contextmanager
def _open_output(path: Path, width: int, height: int, fps: int,
                 crf: int) -> Iterator[tuple[av.container.OutputContainer, av.VideoStream]]:
    # faststart moves the moov atom to the front so browsers can play while downloading
    container = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
    try:
        yield container, _add_video_stream(container, width, height, fps, crf)
    finally:
        container.close()


def _add_video_stream(container: av.container.OutputContainer, width: int, height: int,
                      fps: int, crf: int) -> av.VideoStream:
    stream = container.add_stream("libx264", rate=fps,
                                  options={"preset": PRESET, "crf": str(crf)})
    stream.width, stream.height, stream.pix_fmt = width, height, PIX_FMT
    stream.codec_context.time_base = Fraction(1, fps)
    stream.time_base = Fraction(1, fps)
    return stream


def _encode_all(frames: Iterator[np.ndarray], container: av.container.OutputContainer,
                stream: av.VideoStream, shape: tuple[int, int, int],
                on_frame: Callable[[int], None] | None,
                middle_hint: int | None, tiles: TileSampler) -> tuple[int, np.ndarray | None]:
    n, kept = 0, None
    for frame in frames:
        _check_frame(frame, shape)
        if n == middle_hint:
            kept = frame.copy()
        tiles.offer(n, frame)
        _encode_one(container, stream, frame, n)
        n += 1
        if on_frame is not None:
            on_frame(n)
    container.mux(stream.encode(None))
    return n, kept


def _check_frame(frame: np.ndarray, shape: tuple[int, int, int]) -> None:
    if frame.shape != shape:
        raise ValueError(f"frame shape {frame.shape} differs from {shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frame.dtype}")


def _encode_one(container: av.container.OutputContainer, stream: av.VideoStream,
                frame: np.ndarray, index: int) -> None:
    video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    video_frame.pts = index
    container.mux(stream.encode(video_frame))


def _decode_frame_at(path: Path, index: int) -> np.ndarray:
    for i, frame in enumerate(decode_frames(path)):
        if i == index:
            return frame
    raise ValueError(f"{path} has no frame {index}")


def write_webp_thumbnail(frame: np.ndarray, path: Path, *, max_side: int = 640,
                         quality: int = 80) -> tuple[int, int]:
    """Write ``frame`` as a WebP no larger than ``max_side``; returns the size written."""
    image = Image.fromarray(np.ascontiguousarray(frame), mode="RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    image.save(path, format="WEBP", quality=quality)
    return image.size


class TileSampler:
    """Keeps small copies of frames spread evenly over a stream, whatever its length.

    Tile ``j`` is frame ``ceil(j * step)``, ``step`` being ``expected / count``: a video of the
    expected length gives exactly ``count`` tiles, each scaled down once. When twice that many
    have piled up (the length was unknown or wrong), every other tile is dropped and ``step``
    doubles, which keeps the same rule, so memory stays bounded at ``2 * count`` tiles.
    """

    def __init__(self, expected: int | None = None, count: int = SPRITE_TILES,
                 side: int = SPRITE_SIDE) -> None:
        self.count, self.side = count, side
        self.step = max((expected or 0) / count, 1.0)
        self.kept: list[np.ndarray] = []

    def offer(self, index: int, frame: np.ndarray) -> None:
        if index < math.ceil(len(self.kept) * self.step):
            return
        image = Image.fromarray(np.ascontiguousarray(frame))
        # reducing_gap lets Pillow shrink by whole factors first: cheap even for 1080p frames
        image.thumbnail((self.side, self.side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        self.kept.append(np.asarray(image))
        if len(self.kept) >= 2 * self.count:
            self.kept, self.step = self.kept[::2], self.step * 2

    def result(self) -> tuple[np.ndarray, ...]:
        n = len(self.kept)
        if n <= self.count:
            return tuple(self.kept)
        # first and last kept frames included, the rest evenly between them
        return tuple(self.kept[i * (n - 1) // max(self.count - 1, 1)] for i in range(self.count))


def write_spritesheet(tiles: Sequence[np.ndarray], path: Path, *, quality: int = 80) -> tuple[int, int]:
    """Lay ``tiles`` (same size, in order) out left to right, top to bottom in a near-square grid
    and write it as a JPEG; returns ``(columns, rows)``."""
    if not tiles:
        raise ValueError("a sprite sheet needs at least one tile")
    height, width = tiles[0].shape[:2]
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * width, rows * height))
    for i, tile in enumerate(tiles):
        sheet.paste(Image.fromarray(tile), ((i % columns) * width, (i // columns) * height))
    sheet.save(path, format="JPEG", quality=quality)
    return columns, rows


def probe(path: Path) -> VideoInfo:
    """Describe the first video stream, counting frames by decoding them (not metadata)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n_frames = sum(1 for _ in container.decode(stream))
        ctx = stream.codec_context
        return VideoInfo(width=ctx.width, height=ctx.height, n_frames=n_frames,
                         fps=float(stream.average_rate or stream.guessed_rate or 0),
                         codec=ctx.name, pix_fmt=ctx.pix_fmt or "",
                         duration_s=_duration_s(container, stream))


def _duration_s(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return (container.duration or 0) / av.time_base


def decode_frames(path: Path) -> Iterator[np.ndarray]:
    """Yield every frame of the first video stream as HxWx3 uint8 RGB."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")
