"""Sound: AAC tracks muxed beside the H.264 video, read back, and joined along a timeline.

The encoder (``encode.py``) writes the picture as frames arrive; sound comes from the engine in one
piece (``ctx.audio``), so it is added afterwards by :func:`mux`, which copies the video's packets
untouched and encodes the track as AAC, cut or padded with silence to the video's exact length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from ..engines.base import AudioTrack

SAMPLE_RATE = 48_000
BIT_RATE = 128_000


def fit(track: AudioTrack, seconds: float) -> AudioTrack:
    """``track`` cut, or padded with silence, to exactly ``seconds``."""
    n = max(round(seconds * track.sample_rate), 0)
    samples = track.samples[:, :n]
    if samples.shape[1] < n:
        samples = np.pad(samples, ((0, 0), (0, n - samples.shape[1])))
    return AudioTrack(np.ascontiguousarray(samples, dtype=np.float32), track.sample_rate)


def resample(track: AudioTrack, rate: int) -> AudioTrack:
    """Linear interpolation to ``rate`` Hz (good enough for joining; the sources are engines')."""
    if track.sample_rate == rate:
        return track
    n_in = track.samples.shape[1]
    n_out = max(round(n_in * rate / track.sample_rate), 1)
    at = np.linspace(0, max(n_in - 1, 0), n_out)
    rows = [np.interp(at, np.arange(n_in), channel) for channel in track.samples]
    return AudioTrack(np.asarray(rows, dtype=np.float32), rate)


def stereo(track: AudioTrack) -> AudioTrack:
    samples = track.samples
    if samples.shape[0] == 1:
        samples = np.repeat(samples, 2, axis=0)
    return AudioTrack(samples[:2].astype(np.float32), track.sample_rate)


@dataclass
class Timeline:
    """Tracks placed at offsets (seconds) in one video: a storyboard's shots, an extension after
    its source. Gaps are silence; a track never runs into the next one's place."""

    pieces: list[tuple[float, AudioTrack]] = field(default_factory=list)

    def place(self, offset: float, track: AudioTrack) -> None:
        self.pieces.append((offset, track))

    def render(self, seconds: float) -> AudioTrack | None:
        if not self.pieces:
            return None
        out = np.zeros((2, round(seconds * SAMPLE_RATE)), dtype=np.float32)
        ordered = sorted(self.pieces, key=lambda p: p[0])
        for i, (offset, track) in enumerate(ordered):
            end = ordered[i + 1][0] if i + 1 < len(ordered) else seconds
            piece = fit(stereo(resample(track, SAMPLE_RATE)), max(end - offset, 0.0)).samples
            start = round(offset * SAMPLE_RATE)
            room = max(out.shape[1] - start, 0)
            out[:, start:start + min(piece.shape[1], room)] = piece[:, :room]
        return AudioTrack(np.clip(out, -1.0, 1.0), SAMPLE_RATE)


def mux(video: Path, track: AudioTrack, out: Path, *, seconds: float, title: str | None = None) -> None:
    """Write ``out``: the video stream of ``video`` (copied) and ``track`` as AAC, exactly ``seconds`` long."""
    track = fit(stereo(resample(track, SAMPLE_RATE)), seconds)
    with av.open(str(video)) as src, av.open(str(out), mode="w", format="mp4",
                                               options={"movflags": "+faststart"}) as dst:
        v_in = src.streams.video[0]
        v_out = dst.add_stream_from_template(v_in)
        a_out = dst.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        a_out.bit_rate = BIT_RATE
        if title:
            a_out.metadata["title"] = title
            a_out.metadata["handler_name"] = title
        for packet in src.demux(v_in):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = v_out
            dst.mux(packet)
        _encode_audio(dst, a_out, track)


def _encode_audio(dst, stream, track: AudioTrack) -> None:
    size = stream.codec_context.frame_size or 1024
    samples = track.samples
    for start in range(0, samples.shape[1], size):
        chunk = np.ascontiguousarray(samples[:, start:start + size])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = SAMPLE_RATE, start
        dst.mux(stream.encode(frame))
    dst.mux(stream.encode(None))


def read(path: Path) -> AudioTrack | None:
    """The first audio stream of ``path`` as float32 ``(channels, n)``, or None without one."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        return None
    return AudioTrack(np.concatenate(chunks, axis=1).astype(np.float32), SAMPLE_RATE)


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int
    duration_s: float
    title: str | None


def probe(path: Path) -> AudioInfo | None:
    """The first audio stream's codec, rate, channels and duration (by decoding), or None."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        title = stream.metadata.get("title") or stream.metadata.get("handler_name")
        codec, rate, channels = ctx.name, ctx.sample_rate, ctx.channels
    track = read(path)
    return AudioInfo(codec, rate, channels, track.seconds if track else 0.0, title)
