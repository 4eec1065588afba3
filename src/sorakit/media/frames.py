"""Frame streams: reading a source video back, and fitting frames to another size or rate.

Used where one video is built from another (remix, extend, storyboard): each function takes and
yields HxWx3 uint8 RGB frames one at a time, so no video is ever held whole in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from .encode import decode_frames


def frame_count(path: Path) -> int:
    """Frames in the first video stream: the container's count when it has one (sorakit's MP4s
    do), else counted by decoding."""
    with av.open(str(path)) as container:
        declared = container.streams.video[0].frames
    return declared if declared > 0 else sum(1 for _ in decode_frames(path))


def resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """``frame`` scaled to cover ``width`` x ``height`` and centre-cropped (no distortion)."""
    if frame.shape[:2] == (height, width):
        return frame
    image = Image.fromarray(np.ascontiguousarray(frame))
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8)


def conform(frames: Iterable[np.ndarray], width: int, height: int) -> Iterator[np.ndarray]:
    for frame in frames:
        yield resize(frame, width, height)


def retime(frames: Iterable[np.ndarray], src_fps: float, dst_fps: float, n_out: int) -> Iterator[np.ndarray]:
    """Exactly ``n_out`` frames at ``dst_fps`` from a stream at ``src_fps``: each output frame is
    the source frame showing at its time (the last one repeats if the source runs short)."""
    it = iter(frames)
    current, index = next(it, None), 0
    if current is None:
        raise ValueError("retime needs at least one frame")
    for j in range(n_out):
        wanted = int(j * src_fps / dst_fps + 1e-9)
        while index < wanted:
            following = next(it, None)
            if following is None:
                break
            current, index = following, index + 1
        yield current


def sample(path: Path, n_out: int, width: int, height: int) -> Iterator[np.ndarray]:
    """``n_out`` frames spread evenly over the whole video at ``path``, at ``width`` x ``height``."""
    total = frame_count(path)
    return conform(retime(decode_frames(path), total, n_out, n_out), width, height)


def save_png(frame: np.ndarray, path: Path) -> Path:
    Image.fromarray(np.ascontiguousarray(frame)).save(path, format="PNG")
    return path
