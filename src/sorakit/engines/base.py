"""The engine interface: a request in, exactly ``n_frames`` RGB frames out.

Operations (``RenderJob.operation``), each declared by an engine in :meth:`Engine.operations`:

- ``generate``: text to video; with ``job.image`` set, image to video (operation ``image``).
- ``remix``: a new prompt applied to ``job.source`` (an MP4), video to video, with ``job.strength``
  (0: keep the source, 1: ignore it). The engine yields ``n_frames`` frames of its own plan.
- ``extend``: continue ``job.source``. ``job.image`` is the source's last frame (a PNG);
  the engine yields the ``n_frames`` frames that come *after* it (never the conditioning frame
  itself), and the worker joins them onto the source as one MP4.

Storyboards and variations are the worker's business: several ``generate`` jobs in a row.

Sound (capability ``audio``): when ``job.audio`` is true, an engine that makes sound hands its track
to ``ctx.audio(track)`` once per job, before its last frame is yielded; the worker muxes it as AAC,
trimmed or padded with silence to the video's length. Engines without sound never call it.

Engines never touch the store or the file system's final paths: the worker owns the task's
lifecycle and the encoder owns the MP4. An engine only turns a :class:`RenderJob` into frames,
reporting progress and honouring cancellation through the :class:`RenderContext` it is handed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Cancelled(Exception):
    """Raised inside an engine (by ``RenderContext.check_cancel``) to stop a task promptly."""


class PlanRefused(Exception):
    """The engine cannot make exactly what was asked; ``param`` names the request field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class EngineError(Exception):
    """An engine could not produce the video; ``reason`` is shown to the user."""

    def __init__(self, reason: str, *, code: str = "engine_error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class RenderJob:
    task_id: str
    prompt: str
    width: int
    height: int
    n_frames: int
    fps: int = 30
    seed: int | None = None
    style_id: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    #: an uploaded image to start from (image-to-video), already checked to be a real image;
    #: for ``extend``, the source video's last frame
    image: Path | None = None
    #: ``generate``, ``remix`` or ``extend`` (see the module's docstring)
    operation: str = "generate"
    #: the video a ``remix`` transforms or an ``extend`` continues (an MP4 sorakit made)
    source: Path | None = None
    #: how far a remix may move from its source, 0..1 (None: the engine's default)
    strength: float | None = None
    #: whether sound is wanted (engines with the ``audio`` capability then call ``ctx.audio``)
    audio: bool = False


@dataclass(frozen=True)
class Plan:
    """What an engine will really make of a request: its size, frame count and frame rate."""

    width: int
    height: int
    n_frames: int
    fps: int


#: every operation an engine may declare; ``image`` is generate starting from an image
OPERATIONS = ("generate", "image", "remix", "extend", "audio")
#: how each operation is named in messages
OPERATION_NAMES = {"generate": "text-to-video", "image": "image-to-video", "remix": "remix (video-to-video)",
                   "extend": "extension", "audio": "sound"}


@dataclass(frozen=True)
class AudioTrack:
    """A job's sound: ``samples`` float32 in [-1, 1], shape ``(channels, n)``, at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[1] / self.sample_rate


#: the live service's sizes (small: observed; large: HD), as (width, height)
WEB_SIZES = {
    ("small", "portrait"): (352, 640), ("small", "landscape"): (640, 352), ("small", "square"): (480, 480),
    ("large", "portrait"): (720, 1280), ("large", "landscape"): (1280, 720), ("large", "square"): (960, 960),
}


class RenderContext(Protocol):
    def progress(self, fraction: float) -> None:
        """The engine's own stage is ``fraction`` (0..1) done."""

    def check_cancel(self) -> None:
        """Raise :class:`Cancelled` when the task was cancelled or its lease lost."""

    def audio(self, track: AudioTrack) -> None:
        """The job's sound track (engines with the ``audio`` capability, when ``job.audio``)."""


class Engine(ABC):
    #: name used in configuration and in drafts' metadata
    name: str = "engine"
    #: True for engines that do not run a generative model
    placeholder: bool = False
    #: share of a task's progress bar covered by ``ctx.progress``; the rest follows encoding
    progress_share: float = 0.0

    #: True when the engine can start from an uploaded image
    supports_image: bool = False
    #: the title of the audio streams this engine's sound is muxed as (None: none)
    sound_label: str | None = None

    def plan(self, orientation: str, size: str, n_frames: int, image: bool = False) -> Plan:
        """Map a request onto what this engine makes; the default is the web API's own sizes."""
        width, height = WEB_SIZES[(size, orientation)]
        return Plan(width, height, n_frames, 30)

    def plan_exact(self, width: int, height: int, seconds: float, image: bool = False) -> Plan:
        """Exactly ``width`` x ``height`` for exactly ``seconds`` (the official API's contract), or
        :class:`PlanRefused` naming ``size`` or ``seconds``. ``Plan.n_frames`` is the number of
        frames the MP4 will hold, ``seconds * fps``. The default suits engines that draw any size."""
        if width % 2 or height % 2:
            raise PlanRefused(f"{width}x{height}: width and height must be even.", "size")
        return Plan(width, height, round(seconds * 30), 30)

    def operations(self) -> frozenset[str]:
        """What this engine can do (a subset of :data:`OPERATIONS`)."""
        return frozenset({"generate", *(("image",) if self.supports_image else ())})

    def unsupported(self, operation: str) -> str | None:
        """Why ``operation`` cannot run on this engine (shown to the user), or None."""
        if operation in self.operations():
            return None
        return f"engine {self.name!r} cannot do {OPERATION_NAMES.get(operation, operation)}"

    def preload(self) -> bool:
        """Load (and warm up) now, in the thread that will run this engine's jobs, when loading
        later would make the first user wait for a compilation; True when something was loaded."""
        return False

    def unavailable(self) -> str | None:
        """Why this engine cannot run here (a missing extra, missing weights), or None."""
        return None

    @abstractmethod
    def frames(self, job: RenderJob, ctx: RenderContext) -> Iterator[np.ndarray]:
        """Yield exactly ``job.n_frames`` frames, each ``(height, width, 3)`` uint8 RGB."""

    def describe(self, operation: str | None = None) -> dict[str, Any]:
        """Metadata recorded with every draft this engine makes (``operation``: the one it did)."""
        return {"name": self.name, "placeholder": self.placeholder}
