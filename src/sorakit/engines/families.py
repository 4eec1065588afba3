"""Model families: how a web API request maps onto each model's native constraints.

| family | pipelines (t2v / i2v) | fps | frames | size multiple | native small / large (landscape) | steps | guidance |
|---|---|---|---|---|---|---|---|
| wan | WanPipeline / WanImageToVideoPipeline | 16 | 4k+1, at most 81 | 16 | 832x480 / 1280x720 | 50 | 5.0 |
| ltx | LTXPipeline / LTXImageToVideoPipeline (same weights) | 24 | 8k+1, at most 257 | 32 | 768x512 / 1216x704 | 50 | 3.0 |
| cogvideox | CogVideoXPipeline / CogVideoXImageToVideoPipeline | 8 | 4k+1, at most 49 | 16 | 720x480 / 720x480 | 50 | 6.0 |
| ltx2 | LTX2Pipeline / LTX2ImageToVideoPipeline (same weights), with sound | 24 | 8k+1, at most 481 | 32 (64 two-stage), at least 64 | 768x512 / 1280x704 | 30 | 3.0 |
| hunyuanvideo15 | HunyuanVideo15Pipeline / HunyuanVideo15ImageToVideoPipeline | 24 | 4k+1, at most 121 | 16 | 848x480 / 1280x720 | 50 | 6.0 (the guider's) |
| wan22-ti2v | WanPipeline / WanImageToVideoPipeline (same weights, ``expand_timesteps``) | 24 | 4k+1, at most 121 | 32 | 1280x704 / 1280x704 | 50 | 5.0 |

Where the newer families' facts come from (diffusers 0.42.1's pipeline sources and the model cards):

- ltx2 (Lightricks/LTX-2): the pipeline refuses sizes off 32 (``check_inputs``); the VAE compresses x32
  in space and x8 in time (8k+1 frames); its decoder pads by reflection, so a side needs two latent
  rows, 64 px. ``frame_rate`` defaults to 24, ``num_inference_steps`` 30, ``guidance_scale`` 3.0
  (audio guidance 7.0 and the STG/modality terms stay at the pipeline's defaults); 768x512 is its
  default size; ``max_seconds`` 20 bounds its auto duration (481 frames at 24 fps). Sound: the
  output's ``audio`` is (batch, channels, samples) from the vocoder at
  ``vocoder.config.output_sampling_rate`` (24 kHz for LTX-2), always denoised with the video (the
  transformer is joint), so a job without sound only drops it. Two-stage generation (model option
  ``upsampler_path``): stage 1 at half size, ``LTX2LatentUpsamplePipeline`` x2, stage 2 with
  ``STAGE_2_DISTILLED_SIGMA_VALUES`` (3 steps, identity guidance, static shift), as diffusers' LTX-2
  docs; sizes then go by 64 (stage 1 stays on 32) and at least 128.
- hunyuanvideo15 (hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v / _i2v, separate
  weights): VAE x16 space, x4 time, transformer patch 1: sizes by 16, 4k+1 frames; 121 frames (5 s at
  24 fps, the I2V example's export rate) by default; 50 steps; no ``guidance_scale`` argument: the
  checkpoint's ``guider`` (ClassifierFreeGuidance, 6.0) is used unless the model or request sets one,
  then ``guider.new(guidance_scale=...)``. 480p = 848x480 (the 16:9 bucket of ``target_size`` 640),
  720p = 1280x720. Its image-to-video pipeline takes no size: it picks the aspect bucket nearest the
  image at ``target_size``; the engine pins that choice to the planned size.
- wan22-ti2v (Wan-AI/Wan2.2-TI2V-5B-Diffusers): one checkpoint for text and image: ``WanPipeline``
  with ``expand_timesteps`` true, and ``WanImageToVideoPipeline`` on the same modules (no image
  encoder; the first latent frame is the image's). Its VAE compresses x16 (patch 2 on x8) and the
  transformer patches 2: sizes by 32; x4 in time: 4k+1 frames; 1280x704 at 24 fps, 121 frames (5 s).

Remix and extend (``Family.v2v_class``, ``remix_style``, ``extend_via``; diffusers 0.42.1):

| family | remix (video to video, same weights as t2v) | strength (default 0.7) | extend |
|---|---|---|---|
| wan | WanVideoToVideoPipeline(video=, strength=) | SDEdit noise level: ``int(steps * strength)`` steps run | WanImageToVideoPipeline from the last frame (only with ``image_path``: separate weights) |
| ltx | LTXConditionPipeline(conditions=[LTXVideoCondition(video=, frame_index=0, strength=1 - strength)]) | the source frames condition with ``1 - strength``; every step runs | LTXConditionPipeline conditioned on the source's last 9 frames (``frame_index=0``, strength 1) |
| cogvideox | CogVideoXVideoToVideoPipeline(video=, strength=) | as wan | CogVideoXImageToVideoPipeline from the last frame (only with ``image_path``) |
| ltx2 | LTX2ConditionPipeline(conditions=[LTX2VideoCondition(frames=, index=0, strength=1 - strength)]) | as ltx | as ltx, with LTX2VideoCondition; the sound of the 9 conditioning frames is dropped |
| hunyuanvideo15 | none (diffusers has no video-to-video pipeline for it) | | HunyuanVideo15ImageToVideoPipeline from the last frame (only with ``image_path``) |
| wan22-ti2v | WanVideoToVideoPipeline(video=, strength=) (scalar timesteps equal the expanded ones when no frame is fixed) | as wan | WanImageToVideoPipeline from the last frame (same weights) |

A request's ``n_frames`` counts frames at 30 fps, so it stands for a duration: ``n_frames / 30``
seconds become ``duration * fps`` of the model's frames, snapped to its ``tk+1`` rule and capped.
Portrait swaps width and height; square takes the side whose area matches, snapped (CogVideoX's
image-to-video model only makes its native landscape size, whatever the orientation). ``style_id``
presets are folded into the prompt as a short phrase.

The official API (``plan_exact``) asks for an exact size and duration instead: the size must be
on the family's multiple (CogVideoX image-to-video: its fixed size only), and ``seconds * fps``
frames must fit the longest clip; the model renders the next ``tk+1`` count up from there and the
extra frames are dropped, so the MP4 holds exactly ``seconds * fps`` frames.

An extension renders the frames it conditions on as well and drops them: one more for the
image-to-video route (the pipeline returns the conditioning image as its frame 0), ``extend_context``
more for LTX (the conditioning clip comes back as the first frames), each rounded up to the rule
(:meth:`Family.extend_frames`). At a model's longest clip that goes a step or two past its cap.
Remix and extend round CogVideoX up to ``8k+1`` (``clean_frames``): with an even latent count its
VAE decodes the first latent frame into four identical frames (after the image, three copies of it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .base import Plan, PlanRefused

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
    #: the video-to-video pipeline remix runs; it takes the text-to-video weights (built from the
    #: t2v pipeline's components); None: no remix
    v2v_class: str | None = None
    #: how remix drives ``v2v_class``: "strength" (SDEdit: ``video=`` and ``strength=``, the output
    #: has the input's length) or "conditions" (LTX: the source frames condition the render, with
    #: ``1 - strength``)
    remix_style: str = "strength"
    #: remix strength when the request gives none (0: keep the source, 1: ignore it)
    remix_strength: float = 0.7
    #: how extend continues a video: "i2v" (the image-to-video pipeline from the last frame) or
    #: "v2v" (``v2v_class`` conditioned on the source's last ``extend_context`` frames)
    extend_via: str = "i2v"
    #: frames of the source's end an extension conditions on ("v2v" only; on the ``tk+1`` rule)
    extend_context: int = 1
    #: the VAE decodes the first latent frame alone only when the latent count is odd (CogVideoX:
    #: ``4k+1`` frames with an even latent count come back as ``4k+4``, the first four identical)
    odd_latents: bool = False
    #: the smallest width or height the model renders (LTX-2's decoder needs two latent rows)
    min_side: int = 0
    #: the pipelines return sound with the frames (``output.audio``, from ``pipe.vocoder``)
    audio: bool = False
    #: how guidance reaches the pipeline: "argument" (``guidance_scale=``) or "guider" (the
    #: pipeline's ``guider`` component; HunyuanVideo 1.5)
    guidance_via: str = "argument"
    #: the image-to-video pipeline takes ``width``/``height`` (HunyuanVideo 1.5's picks its own)
    i2v_takes_size: bool = True
    #: the condition API of ``remix_style`` "conditions": "ltx" (LTXVideoCondition) or "ltx2"
    conditions_api: str = "ltx"

    def frames_for(self, n_frames_30fps: int, cap: int | None, fps: int | None = None) -> int:
        wanted = max(n_frames_30fps / 30 * (fps or self.fps), 1)
        k_max = (self.longest(cap) - 1) // self.frame_step
        k = min(max(round((wanted - 1) / self.frame_step), 1), k_max)
        return self.frame_step * k + 1

    def longest(self, cap: int | None = None) -> int:
        """The largest frame count on the ``tk+1`` rule within ``cap`` (the model's max_frames)."""
        k_max = max(((cap or self.max_frames) - 1) // self.frame_step, 1)
        return self.frame_step * k_max + 1

    def render_frames(self, wanted: int) -> int:
        """The smallest count on the ``tk+1`` rule that holds ``wanted`` frames (at least one step)."""
        k = max(math.ceil((wanted - 1) / self.frame_step), 1)
        return self.frame_step * k + 1

    def clean_frames(self, wanted: int) -> int:
        """Like :meth:`render_frames`, but a count whose first frame decodes on its own (CogVideoX:
        ``8k+1``, an odd latent count), so no frame is repeated at the start. Remix and extend use it."""
        step = self.frame_step * (2 if self.odd_latents else 1)
        return step * max(math.ceil((wanted - 1) / step), 1) + 1

    def extend_frames(self, wanted: int) -> tuple[int, int]:
        """An extension of ``wanted`` frames: (frames to render, leading frames to drop). The
        conditioning frames come back first (the image, or the ``extend_context`` clip)."""
        skip = self.extend_context if self.extend_via == "v2v" else 1
        return self.clean_frames(wanted + skip), skip

    def snap(self, value: float) -> int:
        return max(self.multiple, self.min_side, round(value / self.multiple) * self.multiple)

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

    def plan_exact(self, width: int, height: int, seconds: float, *, resolution=None,
                   max_frames: int | None = None, image: bool = False, fps: int | None = None) -> Plan:
        """Exactly ``width`` x ``height`` and ``seconds * fps`` frames, or :class:`PlanRefused`."""
        if image and self.i2v_fixed_size:
            self._check_fixed_size(width, height, resolution or {})
        else:
            self._check_multiple(width, height)
        rate = fps or self.fps
        wanted = round(seconds * rate)
        longest = self.longest(max_frames)
        if wanted > longest:  # longest is on the rule, so nothing up to it needs more
            most = math.floor(longest / rate * 100) / 100  # floored: never promise a frame too many
            raise PlanRefused(f"{seconds:g} seconds ({wanted} frames at {rate} fps) is longer than this "
                              f"model makes: {most:g} seconds ({longest} frames) at most.", "seconds")
        return Plan(width, height, wanted, rate)

    def _check_multiple(self, width: int, height: int) -> None:
        if self.min_side and min(width, height) < self.min_side:
            raise PlanRefused(f"{width}x{height}: this model needs a width and height of at least "
                              f"{self.min_side}.", "size")
        if width % self.multiple == 0 and height % self.multiple == 0:
            return
        m = self.multiple
        below = f"{max(width // m * m, m)}x{max(height // m * m, m)}"
        above = f"{-(-width // m) * m}x{-(-height // m) * m}"
        raise PlanRefused(f"{width}x{height}: this model needs a width and height that are multiples "
                          f"of {m}; the nearest sizes it can make are {below} and {above}.", "size")

    def _check_fixed_size(self, width: int, height: int, resolution: dict) -> None:
        # The image model's learned positional embeddings fix its size (the landscape native one).
        sizes = sorted({self.size_for(s, "landscape", resolution) for s in self.native})
        if (width, height) not in sizes:
            named = " or ".join(f"{w}x{h}" for w, h in sizes)
            raise PlanRefused(f"{width}x{height}: this model's image-to-video pipeline makes only {named}.",
                              "size")

    def prompt_with_style(self, prompt: str, style_id: str | None) -> str:
        phrase = STYLES.get(style_id or "")
        return f"{prompt}, {phrase}" if phrase else prompt


FAMILIES = {
    "wan": Family("wan", "WanPipeline", "WanImageToVideoPipeline", fps=16, frame_step=4, max_frames=81,
                  multiple=16, native={"small": (832, 480), "large": (1280, 720)}, steps=50, guidance=5.0,
                  v2v_class="WanVideoToVideoPipeline"),
    "ltx": Family("ltx", "LTXPipeline", "LTXImageToVideoPipeline", fps=24, frame_step=8, max_frames=257,
                  multiple=32, native={"small": (768, 512), "large": (1216, 704)}, steps=50, guidance=3.0,
                  i2v_shares_weights=True, extra={"frame_rate": 24}, min_steps=2,
                  v2v_class="LTXConditionPipeline", remix_style="conditions", extend_via="v2v", extend_context=9),
    "cogvideox": Family("cogvideox", "CogVideoXPipeline", "CogVideoXImageToVideoPipeline", fps=8,
                        frame_step=4, max_frames=49, multiple=16,
                        native={"small": (720, 480), "large": (720, 480)}, steps=50, guidance=6.0,
                        i2v_fixed_size=True, v2v_class="CogVideoXVideoToVideoPipeline", odd_latents=True),
    "ltx2": Family("ltx2", "LTX2Pipeline", "LTX2ImageToVideoPipeline", fps=24, frame_step=8, max_frames=481,
                   multiple=32, min_side=64, native={"small": (768, 512), "large": (1280, 704)}, steps=30,
                   guidance=3.0, i2v_shares_weights=True, extra={"frame_rate": 24}, min_steps=2, audio=True,
                   v2v_class="LTX2ConditionPipeline", remix_style="conditions", conditions_api="ltx2",
                   extend_via="v2v", extend_context=9),
    "hunyuanvideo15": Family("hunyuanvideo15", "HunyuanVideo15Pipeline", "HunyuanVideo15ImageToVideoPipeline",
                             fps=24, frame_step=4, max_frames=121, multiple=16,
                             native={"small": (848, 480), "large": (1280, 720)}, steps=50, guidance=6.0,
                             guidance_via="guider", i2v_takes_size=False),
    "wan22-ti2v": Family("wan22-ti2v", "WanPipeline", "WanImageToVideoPipeline", fps=24, frame_step=4,
                         max_frames=121, multiple=32, native={"small": (1280, 704), "large": (1280, 704)},
                         steps=50, guidance=5.0, i2v_shares_weights=True, v2v_class="WanVideoToVideoPipeline"),
}
