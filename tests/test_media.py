"""Encoding, probing and thumbnails against real MP4/WebP files decoded back."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sorakit.engines.base import Cancelled
from sorakit.media.encode import (
    EncodeResult,
    TileSampler,
    decode_frames,
    encode_mp4,
    probe,
    write_spritesheet,
    write_webp_thumbnail,
)

W, H = 96, 64


def solid(rgb: tuple[int, int, int], width: int = W, height: int = H) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (height, width, 3)).copy()


def ramp_frames(n: int, width: int = W, height: int = H) -> list[np.ndarray]:
    """Frames whose grey level encodes their index, so the middle one can be recognised."""
    return [solid((20 + 15 * i,) * 3, width, height) for i in range(n)]


def top_level_boxes(data: bytes) -> list[str]:
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:  # 64-bit size follows the type
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:  # box runs to the end of the file
            size = len(data) - pos
        boxes.append(kind.decode("latin-1"))
        pos += size
    return boxes


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_round_trip_probe(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    result = encode_mp4(ramp_frames(12), path, width=W, height=H)
    assert (result.n_frames, result.width, result.height) == (12, W, H)
    info = probe(path)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert (info.width, info.height, info.n_frames) == (W, H, 12)
    assert info.fps == pytest.approx(30.0)
    assert info.duration_s == pytest.approx(12 / 30, abs=0.02)


def test_custom_fps_preserves_frame_count(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    encode_mp4(ramp_frames(10), path, width=W, height=H, fps=24)
    info = probe(path)
    assert info.n_frames == 10
    assert info.fps == pytest.approx(24.0)


def test_moov_precedes_mdat(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    encode_mp4(ramp_frames(8), path, width=W, height=H)
    boxes = top_level_boxes(path.read_bytes())
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")


@pytest.mark.parametrize("width,height", [(95, 64), (96, 63), (0, 64)])
def test_odd_or_empty_size_rejected(tmp_path: Path, width: int, height: int) -> None:
    with pytest.raises(ValueError):
        encode_mp4([solid((0, 0, 0), width, height)], tmp_path / "a.mp4", width=width,
                   height=height)


def test_wrong_first_frame_shape_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        encode_mp4([solid((0, 0, 0), W + 2, H)], tmp_path / "a.mp4", width=W, height=H)


def test_wrong_shape_mid_stream_rejected(tmp_path: Path) -> None:
    frames = [solid((0, 0, 0)), solid((0, 0, 0)), np.zeros((H, W, 4), np.uint8)]
    with pytest.raises(ValueError, match="shape"):
        encode_mp4(frames, tmp_path / "a.mp4", width=W, height=H)


def test_non_uint8_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4([np.zeros((H, W, 3), np.float32)], tmp_path / "a.mp4", width=W, height=H)


def test_zero_frames_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        encode_mp4(iter([]), tmp_path / "a.mp4", width=W, height=H)


def test_on_frame_counts_up(tmp_path: Path) -> None:
    seen: list[int] = []
    encode_mp4(iter(ramp_frames(9)), tmp_path / "a.mp4", width=W, height=H,
               on_frame=seen.append)
    assert seen == list(range(1, 10))


def test_exception_mid_stream_propagates_and_closes(tmp_path: Path) -> None:
    def frames():
        yield from ramp_frames(3)
        raise Cancelled()

    seen: list[int] = []
    before = open_fds()
    with pytest.raises(Cancelled):
        encode_mp4(frames(), tmp_path / "a.mp4", width=W, height=H, on_frame=seen.append)
    assert seen == [1, 2, 3]
    assert open_fds() == before  # the container (and its file) was closed


def test_solid_colour_survives_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    colour = (200, 30, 60)
    encode_mp4([solid(colour)] * 4, path, width=W, height=H)
    decoded = list(decode_frames(path))
    assert len(decoded) == 4
    for frame in decoded:
        assert frame.shape == (H, W, 3)
        assert np.abs(frame.reshape(-1, 3).mean(axis=0) - colour).max() < 6


def test_thumbnail_is_middle_frame_for_sized_input(tmp_path: Path) -> None:
    frames = ramp_frames(9)
    result = encode_mp4(frames, tmp_path / "a.mp4", width=W, height=H)
    np.testing.assert_array_equal(result.thumbnail_frame, frames[4])


def test_thumbnail_is_middle_frame_for_streamed_input(tmp_path: Path) -> None:
    frames = ramp_frames(10)
    result = encode_mp4(iter(frames), tmp_path / "a.mp4", width=W, height=H)
    assert isinstance(result, EncodeResult)
    assert result.thumbnail_frame.shape == (H, W, 3)
    # decoded back from the file, so compare approximately: neighbours differ by 15 levels
    assert abs(float(result.thumbnail_frame.mean()) - float(frames[5].mean())) < 5


def test_thumbnail_with_expected_frames(tmp_path: Path) -> None:
    frames = ramp_frames(7)
    result = encode_mp4(iter(frames), tmp_path / "a.mp4", width=W, height=H,
                        expected_frames=7)
    np.testing.assert_array_equal(result.thumbnail_frame, frames[3])


def test_webp_thumbnail_scaled_to_fit(tmp_path: Path) -> None:
    path = tmp_path / "t.webp"
    frame = solid((10, 200, 90), 1280, 720)
    assert write_webp_thumbnail(frame, path) == (640, 360)
    with Image.open(path) as image:
        assert image.format == "WEBP"
        assert image.size == (640, 360)
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert np.abs(pixels.reshape(-1, 3).mean(axis=0) - (10, 200, 90)).max() < 6


def test_webp_thumbnail_portrait_and_no_upscale(tmp_path: Path) -> None:
    assert write_webp_thumbnail(solid((0, 0, 0), 720, 1280), tmp_path / "p.webp",
                                max_side=320) == (180, 320)
    assert write_webp_thumbnail(solid((0, 0, 0), 100, 50), tmp_path / "s.webp") == (100, 50)
    with Image.open(tmp_path / "s.webp") as image:
        assert image.size == (100, 50)


def numbered(n: int, width: int = W, height: int = H) -> list[np.ndarray]:
    """Frames whose grey level is their index (up to 255): a tile tells which frame it came from."""
    return [solid((i,) * 3, width, height) for i in range(n)]


def tile_indices(tiles) -> list[int]:
    return [int(round(float(t.mean()))) for t in tiles]


def test_encoding_keeps_16_evenly_spread_small_tiles(tmp_path: Path) -> None:
    frames = numbered(120, 640, 360)
    result = encode_mp4(iter(frames), tmp_path / "a.mp4", width=640, height=360, expected_frames=120)
    assert tile_indices(result.tiles) == [math.ceil(j * 7.5) for j in range(16)]
    assert {t.shape for t in result.tiles} == {(144, 256, 3)}  # 256 on the long side, aspect kept


def test_tiles_of_a_stream_of_unknown_length_stay_few_and_spread(tmp_path: Path) -> None:
    sampler = TileSampler()
    most = 0
    for i, frame in enumerate(numbered(200, 32, 16)):
        sampler.offer(i, frame)
        most = max(most, len(sampler.kept))
    assert most < 32  # never more than twice the tiles asked for, however long the video
    picked = tile_indices(sampler.result())
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] >= 180
    assert picked == sorted(picked) and max(np.diff(picked)) <= 2 * 200 / 15


def test_a_short_video_gives_a_tile_per_frame(tmp_path: Path) -> None:
    result = encode_mp4(numbered(5), tmp_path / "a.mp4", width=W, height=H)
    assert tile_indices(result.tiles) == [0, 1, 2, 3, 4]
    assert result.tiles[0].shape == (H, W, 3)  # never scaled up


@pytest.mark.parametrize("count,grid", [(16, (4, 4)), (9, (3, 3)), (5, (3, 2)), (1, (1, 1))])
def test_spritesheet_is_a_jpeg_grid_in_reading_order(tmp_path: Path, count: int, grid) -> None:
    colours = [(40 * (i % 6), 255 - 15 * i, 20 * (i // 2)) for i in range(count)]
    path = tmp_path / "s.jpg"
    assert write_spritesheet([solid(c, 48, 32) for c in colours], path) == grid
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == (48 * grid[0], 32 * grid[1])
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    for i, colour in enumerate(colours):
        row, col = divmod(i, grid[0])
        cell = pixels[row * 32 + 8:row * 32 + 24, col * 48 + 8:col * 48 + 40]
        assert np.abs(cell.reshape(-1, 3).mean(axis=0) - colour).max() < 8, i


def test_spritesheet_needs_a_tile(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_spritesheet([], tmp_path / "s.jpg")


def test_a_finished_task_has_a_spritesheet_served_by_a_signed_link(api) -> None:
    task = api.wait(api.create(n_frames=150, orientation="portrait").json()["id"])
    assert task["status"] == "succeeded", task
    gen = api.services.store.generation(task["generations"][0]["id"])
    path = api.settings.media_dir / gen["spritesheet_file"]
    assert gen["spritesheet_file"] == f"{gen['id']}/spritesheet.jpg"
    assert path.stat().st_mode & 0o777 == 0o600
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == (4 * 141, 4 * 256)  # 4x4 tiles of 352x640
        pixels = np.asarray(image.convert("L"), dtype=np.int16)
    # The preview engine fills a bar along each frame's bottom edge as (index + 1) / n_frames:
    # read back, the tiles show frames evenly spread over the video, in reading order.
    filled = [(pixels[row * 256 + 255, col * 141:(col + 1) * 141] > 150).mean()
              for row in range(4) for col in range(4)]
    expected = [(math.ceil(j * 150 / 16) + 1) / 150 for j in range(16)]
    assert np.abs(np.array(filled) - expected).max() < 0.05, filled

    link = api.services.signer.sign(f"/assets/{gen['id']}/spritesheet.jpg")
    reply = api.client.get(link)
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/jpeg"
    assert reply.content == path.read_bytes()
    assert api.client.get(link.replace("sig=", "sig=x")).status_code == 403
