"""Model families: how a web API request maps onto each model's native constraints.

| family | pipelines (t2v / i2v) | fps | frames | size multiple | native small / large (landscape) | steps | guidance |
|---|---|---|---|---|---|---|---|
| wan | WanPipeline / WanImageToVideoPipeline | 16 | 4k+1, at most 81 | 16 | 832x480 / 1280x720 | 50 | 5.0 |
| ltx | LTXPipeline / LTXImageToVideoPipeline (same weights) | 24 | 8k+1, at most 257 | 32 | 768x512 / 1216x704 | 50 | 3.0 |
| cogvideox | CogVideoXPipeline / CogVideoXImageToVideoPipeline | 8 | 4k+1, at most 49 | 16 | 720x480 / 720x480 | 50 | 6.0 |

A request's ``n_frames`` counts frames at 30 fps, so it stands for a duration: ``n_frames / 30``
seconds become ``duration * fps`` of the model's frames, snapped to its ``tk+1`` rule and capped.
Portrait swaps width and height; square takes the side whose area matches, snapped (CogVideoX's
image-to-video model only makes its native landscape size, whatever the orientation). ``style_id``
presets are folded into the prompt as a short phrase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .base import Plan

STYLES = {
    "anime": "anime style, cel shading, vivid colours",
    "retro": "retro look, 1980s film grain, warm faded colours",
    "comic": "comic book style, bold ink outlines, halftone shading",
    "news": "broadcast news footage, steady camera, neutral lighting",
    "selfie": "handheld selfie video, front camera, close framing",
    "handheld": "handheld camera, natural shake, documentary feel",
    "golden": "golden hour light, long warm shadows",
    "festive": "festive atmosphere, string lights, celebration",
    "vintage": "vintage film, sepia tones, soft vignette",
    "nostalgic": "nostalgic home video, soft focus, muted colours",
}
NEGATIVE = ("blurry, low quality, distorted, deformed hands and faces, static frame, flicker, "
            "watermark, subtitles, overexposed")


@dataclass(frozen=True)
class Family:
    name: str
    t2v_class: str
    i2v_class: str
    fps: int
    frame_step: int  # frames = frame_step * k + 1
    max_frames: int
    multiple: int
    native: dict[str, tuple[int, int]]
    steps: int
    guidance: float
    negative_prompt: str = NEGATIVE
    i2v_shares_weights: bool = False
    #: the image-to-video model only takes its native landscape size (CogVideoX I2V's learned
    #: positional embeddings fix it)
    i2v_fixed_size: bool = False
    min_steps: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def frames_for(self, n_frames_30fps: int, cap: int | None, fps: int | None = None) -> int:
        wanted = max(n_frames_30fps / 30 * (fps or self.fps), 1)
        limit = cap or self.max_frames
        k_max = max((limit - 1) // self.frame_step, 1)
        k = min(max(round((wanted - 1) / self.frame_step), 1), k_max)
        return self.frame_step * k + 1

    def snap(self, value: float) -> int:
        return max(self.multiple, round(value / self.multiple) * self.multiple)

    def size_for(self, size: str, orientation: str, resolution: dict[str, tuple[int, int]]) -> tuple[int, int]:
        width, height = resolution.get(size) or self.native[size]
        if orientation == "portrait":
            width, height = height, width
        elif orientation == "square":
            width = height = math.sqrt(width * height)
        return self.snap(width), self.snap(height)

    def plan(self, orientation: str, size: str, n_frames: int, *, resolution=None, max_frames=None,
             image: bool = False, fps: int | None = None) -> Plan:
        if image and self.i2v_fixed_size:
            orientation = "landscape"
        width, height = self.size_for(size, orientation, resolution or {})
        return Plan(width, height, self.frames_for(n_frames, max_frames, fps), fps or self.fps)

    def prompt_with_style(self, prompt: str, style_id: str | None) -> str:
        phrase = STYLES.get(style_id or "")
        return f"{prompt}, {phrase}" if phrase else prompt


FAMILIES = {
    "wan": Family("wan", "WanPipeline", "WanImageToVideoPipeline", fps=16, frame_step=4, max_frames=81,
                  multiple=16, native={"small": (832, 480), "large": (1280, 720)}, steps=50, guidance=5.0),
    "ltx": Family("ltx", "LTXPipeline", "LTXImageToVideoPipeline", fps=24, frame_step=8, max_frames=257,
                  multiple=32, native={"small": (768, 512), "large": (1216, 704)}, steps=50, guidance=3.0,
                  i2v_shares_weights=True, extra={"frame_rate": 24}, min_steps=2),
    "cogvideox": Family("cogvideox", "CogVideoXPipeline", "CogVideoXImageToVideoPipeline", fps=8,
                        frame_step=4, max_frames=49, multiple=16,
                        native={"small": (720, 480), "large": (720, 480)}, steps=50, guidance=6.0,
                        i2v_fixed_size=True),
}
