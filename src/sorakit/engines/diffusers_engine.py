"""The diffusers engine: open text-to-video models (Wan, LTX-Video, CogVideoX, LTX-2, HunyuanVideo 1.5,
Wan 2.2 TI2V) behind the API.

- A pipeline loads once per worker thread and stays resident (schedulers keep per-run state and
  are not thread-safe, so threads never share one).
- Progress and cancellation come from wrapping the scheduler's ``step``: every family gets the
  same hook, and raising :class:`Cancelled` there stops the run before the VAE decode (setting
  ``pipe._interrupt`` would still decode). It also serves pipelines that take no step callback
  (HunyuanVideo 1.5), and counts LTX-2's steps once although LTX-2 steps a deep copy of the
  scheduler for its audio latents too (see :class:`StepHook`).
- Denoising is 90 % of the engine's stage, the VAE decode the rest; the worker adds encoding.
- The pipeline renders the next frame count on the family's ``tk+1`` rule at or above
  ``job.n_frames`` and only ``job.n_frames`` frames are yielded, so an exact plan (the official
  API's seconds * fps) comes out exact; web plans are already on the rule and render as asked.
- Out-of-memory and other errors fail only the task; cache hooks are reset and GPU memory
  released in a ``finally`` so the next task starts clean.

Operations (the table in :mod:`.families` names each family's classes):

- ``remix`` runs the family's video-to-video pipeline (``Family.v2v_class``), built from this
  thread's text-to-video pipeline's components: it is the same weights. The source MP4 is decoded,
  sampled in time at the job's frame rate from its start (a source shorter than the clip is spread
  over it instead), resized to the job's size and handed over as ``Family.clean_frames(n_frames)``
  frames (the ``tk+1`` count, ``8k+1`` for CogVideoX, whose VAE otherwise repeats the first frame).
  Wan/CogVideoX take ``video=`` and ``strength=`` (SDEdit: the source is noised to ``strength`` and
  ``int(steps * strength)`` steps run -- at least one, so a strength of 0 still runs a step);
  LTX takes ``conditions=[LTXVideoCondition(video=..., frame_index=0, strength=1 - strength)]``:
  the source latents start at noise level ``strength`` and are held there until the schedule
  reaches it, which is the same SDEdit, and every step runs. ``strength`` None: 0.7.
- ``extend`` continues the source after its last frame (``job.image``, a lossless PNG of it).
  Wan/CogVideoX run their image-to-video pipeline from that frame; its weights are separate, so only
  a model with ``image_path`` offers ``extend``. The pipeline returns the conditioning image as its
  frame 0, so one more frame is rendered (rounded up by ``Family.extend_frames``) and frame 0 dropped.
  LTX conditions on the source's last 9 frames instead (its own video conditioning, the same
  weights, and motion carries over where a single frame has none): the clip is sampled at the
  job's frame rate, ends with ``job.image``, and comes back as the render's first 9 frames, which
  are dropped. Either way the first frame yielded is the continuation, never the source's frame.
- A remix's or extension's cancel and progress work as generate's: the total is the steps the
  pipeline really runs, so progress reaches ``DENOISE_SHARE`` before the decode.
- Derived pipelines are built from components, not ``from_pipe``: diffusers 0.42's ``from_pipe``
  casts every shared module with ``.to(dtype)`` (float32 unless told), which would re-cast the
  resident text-to-video pipeline too (float32 doubles its memory; bfloat16 undoes the modules
  ``from_pretrained`` keeps in float32). ``LTXConditionPipeline`` passes its own (linear-quadratic)
  timesteps without the ``mu`` a dynamically shifting scheduler needs (LTX-Video 0.9.0/0.9.1's), so
  it gets a copy of the scheduler with ``use_dynamic_shifting=False``. A derived pipeline also takes
  the base's pipeline settings its class accepts (Wan 2.2 TI2V's ``expand_timesteps``), and its
  VAE factors from the VAE's config where diffusers derives them otherwise (Wan 2.2's x16 VAE in
  ``WanVideoToVideoPipeline``, which assumes x8).

Sound (the ``audio`` operation; LTX-2): the pipeline always denoises sound with the picture (its
transformer is joint) and returns it as ``output.audio`` (batch, channels, samples) at
``pipe.vocoder.config.output_sampling_rate``. With ``job.audio`` the engine hands ``ctx.audio`` an
:class:`AudioTrack` of exactly the yielded frames' duration (an extension's conditioning frames'
sound dropped with them, the render's extra frames' trimmed, the causal audio VAE's missing tail
of up to 30 ms padded with silence) before yielding any frame; without it the sound is dropped.

Per-run pipeline state: HunyuanVideo 1.5 takes guidance through its ``guider`` (the checkpoint's own
unless the request or model sets one, then ``guider.new(guidance_scale=...)``), and its image
pipeline takes no size (it picks an aspect bucket): the planned size is pinned for the run.

Two-stage generation (LTX-2 with ``upsampler_path``, read with ``getattr`` until ModelSpec has it):
text- and image-to-video render stage 1 at half the size (``output_type="latent"``), upsample the
latents x2 with ``LTX2LatentUpsamplePipeline``, and refine them at the full size with the same
pipeline class on a static-shift scheduler copy and ``STAGE_2_DISTILLED_SIGMA_VALUES`` (3 steps,
re-noised to the first, no guidance), as diffusers' LTX-2 docs; the stage-1 sound latents go with
them. Progress counts both stages' steps. Sizes then go by 64 and start at 128. Remix and extend
stay one stage.

Context parallelism (``context_parallel``, engines/parallel.py): in a worker started by torchrun,
rank 0's ``preload`` and ``render_with_audio`` of such a model are mirrored on every rank (the same
job, the same seed), and each cancel check inside the run is rank 0's answer broadcast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .base import (OPERATION_NAMES, AudioTrack, Cancelled, Engine, EngineError, Plan, PlanRefused, RenderContext,
                   RenderJob)
from .families import FAMILIES
from . import parallel
from .models import ModelSpec, local_dir

EXTRA = "pip install 'sorakit[diffusers]'"
DENOISE_SHARE = 0.9
PRESENCE_TTL = 30.0  # seconds a "files present" answer is trusted (create checks it)
#: the pipeline kind (this thread's cache key) each operation runs on
KINDS = {"generate": "t2v", "image": "i2v", "remix": "v2v"}
#: families whose model ships a latent upsampler for two-stage generation (``upsampler_path``)
TWO_STAGE_FAMILIES = ("ltx2",)


def _missing_extra() -> str | None:
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return f"the diffusers extra is not installed ({exc.name} is missing): {EXTRA}"
    return None


class StepHook:
    """Wraps ``pipe.scheduler.step``: counts steps into progress, raises on cancel.

    The scheduler's class is swapped for a subclass whose ``step`` counts, for as long as the hook
    is entered. An attribute on the instance would not do: LTX-2 deep-copies the scheduler for its
    audio latents, and a copied instance attribute would step the original scheduler a second time
    per step. A copy keeps the subclass but its ``step`` only passes through. ``done`` may start
    above 0 (a second stage continues the first one's count)."""

    def __init__(self, pipe, ctx: RenderContext, total: int, done: int = 0) -> None:
        self.pipe, self.ctx, self.total, self.done = pipe, ctx, max(total, 1), done
        self._scheduler = self._class = None

    def __enter__(self) -> StepHook:
        scheduler = self._scheduler = self.pipe.scheduler
        cls = self._class = type(scheduler)
        original = cls.step
        hook = self

        # wraps() keeps step's signature visible: CogVideoX inspects it to decide whether to pass
        # its generator, and without it silently draws from the global RNG (seeds stop working).
        @functools.wraps(original)
        def step(this, *args, **kwargs):
            if this is not scheduler:  # a copy (LTX-2's audio scheduler): not a step of its own
                return original(this, *args, **kwargs)
            hook.ctx.check_cancel()
            result = original(this, *args, **kwargs)
            hook.done += 1
            hook.ctx.progress(DENOISE_SHARE * min(hook.done / hook.total, 1.0))
            return result

        scheduler.__class__ = type(cls.__name__, (cls,), {"step": step, "__module__": cls.__module__,
                                                          "__qualname__": cls.__qualname__})
        return self

    def __exit__(self, *exc) -> None:
        if self._scheduler is not None:
            self._scheduler.__class__ = self._class


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, MemoryError) or (oom and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def _release_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Call:
    """One pipeline run: which pipeline, its arguments, the steps it really runs, the frames to drop."""

    kind: str  # "t2v", "i2v" or "v2v"
    args: dict[str, Any]
    steps: int  # scheduler steps the run takes (a strength below 1 runs fewer)
    skip: int = 0  # leading frames that are the conditioning, not the answer
    #: guidance for a family that takes it through its ``guider`` (None: the checkpoint's own)
    guidance: float | None = None
    #: the size an image-to-video pipeline that takes none must make (HunyuanVideo 1.5)
    pinned_size: tuple[int, int] | None = None
    #: two-stage generation: stage 2's extra arguments (the latents are added at run time)
    refine: dict[str, Any] = field(default_factory=dict)


class DiffusersEngine(Engine):
    placeholder = False
    progress_share = 0.9

    def __init__(self, spec: ModelSpec, weights_dir: Path) -> None:
        self.spec, self.family = spec, FAMILIES[spec.family]
        self.name = spec.name
        #: a latent upsampler for two-stage generation (ModelSpec ``upsampler_path``; LTX-2)
        self.upsampler_path: str | None = getattr(spec, "upsampler_path", None) or None
        if self.two_stage:
            # Stage 1 renders at half the size, itself on the family's multiple and minimum.
            f = self.family
            self.family = dataclasses.replace(f, multiple=2 * f.multiple, min_side=2 * max(f.min_side, f.multiple))
        self.weights_dir = weights_dir
        self._local = threading.local()
        self._presence: tuple[float, str | None] | None = None

    @property
    def supports_image(self) -> bool:  # type: ignore[override]
        return bool(self.spec.image_path) or self.family.i2v_shares_weights

    @property
    def two_stage(self) -> bool:
        """Generate and image-to-video run in two stages (half size, x2 latent upsample, refine)."""
        return bool(self.upsampler_path) and self.spec.family in TWO_STAGE_FAMILIES

    def operations(self) -> frozenset[str]:
        ops = {"generate"}
        if self.family.audio:
            ops.add("audio")
        if self.supports_image:
            ops.add("image")
        if self.family.v2v_class:
            ops.add("remix")
        if self.family.extend_via == "v2v" and self.family.v2v_class:
            ops.add("extend")
        elif self.family.extend_via == "i2v" and self.supports_image:
            ops.add("extend")
        return frozenset(ops)

    def unsupported(self, operation: str) -> str | None:
        if operation in self.operations():
            return None
        what = OPERATION_NAMES.get(operation, operation)
        needs_i2v = operation == "image" or (operation == "extend" and self.family.extend_via == "i2v")
        if needs_i2v and not self.supports_image:
            how = "starts from an image" if operation == "image" else "continues a video from its last frame"
            return (f"Model {self.name!r} cannot do {what}: it {how} with {self.family.i2v_class}, whose "
                    f"weights are separate; set models.{self.name}.image_path to them.")
        return f"Model {self.name!r} ({self.family.name}) cannot do {what}."

    def pipeline_class(self, operation: str) -> str:
        """The diffusers pipeline class ``operation`` runs on this model."""
        if operation == "audio":  # sound comes with the frames of whichever pipeline runs
            operation = "generate"
        kind = self._kind(operation)
        f = self.family
        return {"t2v": f.t2v_class, "i2v": f.i2v_class, "v2v": f.v2v_class}[kind] or ""

    def describe(self, operation: str | None = None) -> dict[str, Any]:
        info = {"name": self.name, "placeholder": False, "family": self.family.name, "path": self.spec.path,
                "pipelines": {op: self.pipeline_class(op) for op in sorted(self.operations())}}
        if operation is not None and operation in self.operations():
            info["pipeline"] = self.pipeline_class(operation)
        from . import speed

        info["speed"] = speed.describe(self.spec)  # the switches applied at load (an unapplicable one fails it)
        return info

    def plan(self, orientation: str, size: str, n_frames: int, image: bool = False) -> Plan:
        return self.family.plan(orientation, size, n_frames, resolution=self.spec.resolution,
                                max_frames=self.spec.max_frames, image=image, fps=self.spec.fps)

    def plan_exact(self, width: int, height: int, seconds: float, image: bool = False) -> Plan:
        try:
            return self.family.plan_exact(width, height, seconds, resolution=self.spec.resolution,
                                          max_frames=self.spec.max_frames, image=image, fps=self.spec.fps)
        except PlanRefused as exc:
            raise PlanRefused(f"Model {self.name!r}: {exc.message}", exc.param) from None

    # -- availability -----------------------------------------------------------------------
    def files(self, image: bool = False) -> Path | None:
        path = self.spec.image_path if image else self.spec.path
        return local_dir(path, self.weights_dir, self.name + ("-i2v" if image else "")) if path else None

    def missing_files_message(self, image: bool = False) -> str:
        path = self.spec.image_path if image else self.spec.path
        return (f"the weights of model {self.name!r} ({path}) are not on this machine. Run "
                f"`sorakit models pull {self.name}` where a network exists, or set models.{self.name}."
                f"{'image_path' if image else 'path'} to a local directory holding model_index.json.")

    def unavailable(self) -> str | None:
        now = time.monotonic()
        if self._presence and now - self._presence[0] < PRESENCE_TTL:
            return self._presence[1]
        reason = (_missing_extra() or (None if self.files() else self.missing_files_message())
                  or self._upsampler_problem())
        self._presence = (now, reason)
        return reason

    def upsampler_dir(self) -> Path | None:
        """The latent upsampler's folder (``config.json`` + weights): ``upsampler_path`` itself, its
        ``latent_upsampler`` subfolder (as in Lightricks/LTX-2), a folder of the model's own files, or
        a hub id's snapshot in the Hugging Face cache."""
        raw = self.upsampler_path
        if not raw:
            return None
        candidates = [Path(raw).expanduser(), self.weights_dir / f"{self.name}-upsampler"]
        model = self.files()
        if model is not None:
            candidates.append(model / raw)
        snapshot = _hub_snapshot(raw)
        if snapshot is not None:
            candidates.append(snapshot)
        for candidate in candidates:
            for folder in (candidate, candidate / "latent_upsampler"):
                if (folder / "config.json").is_file():
                    return folder
        return None

    def _upsampler_problem(self) -> str | None:
        if not self.upsampler_path:
            return None
        if self.spec.family not in TWO_STAGE_FAMILIES:
            return (f"models.{self.name}.upsampler_path is set, but only {', '.join(TWO_STAGE_FAMILIES)} models "
                    f"generate in two stages; remove it.")
        if self.upsampler_dir() is None:
            return (f"the latent upsampler of model {self.name!r} ({self.upsampler_path}) is not on this machine: "
                    f"set models.{self.name}.upsampler_path to a folder holding its config.json (or a model "
                    f"folder with a latent_upsampler/ subfolder).")
        return None

    def preload(self) -> bool:
        """Models with speed switches load at worker start: compilation and the warm-up run then,
        not in the first user's request. Others load on first use (each worker would otherwise
        hold every configured model in GPU memory)."""
        if parallel.leads(self.spec):  # rank 0 of a context-parallel group: every rank loads it, together
            return parallel.current().lead(self, "preload")
        if not (self.spec.speed_switches and self.spec.warmup) or self.unavailable():
            return False
        self.pipeline(False)
        return True

    # -- loading --------------------------------------------------------------------------------
    def _kind(self, operation: str) -> str:
        if operation == "extend":
            return "v2v" if self.family.extend_via == "v2v" else "i2v"
        return KINDS[operation]

    def pipeline(self, image: bool = False, kind: str | None = None):
        """This thread's pipeline of ``kind`` ("t2v", "i2v", "v2v"; two-stage models also "up", the
        latent upsampler, and "t2v-refine"/"i2v-refine", stage 2; default by ``image``), loaded on
        first use and kept."""
        key = kind or ("i2v" if image else "t2v")
        cache = self._local.__dict__
        if key not in cache:
            cache[key] = self._load(key)
        return cache[key]

    def _load(self, kind: str):
        reason = _missing_extra()
        if reason:
            raise EngineError(f"Model {self.name!r} cannot run: {reason}", code="extra_missing")
        import diffusers
        import torch

        if self.spec.device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"Model {self.name!r} is set to device {self.spec.device!r}, but no CUDA GPU is "
                              f"available; set models.{self.name}.device = \"cpu\".", code="device_missing")
        if kind == "v2v":
            return self._derive(self.family.v2v_class, self.pipeline(kind="t2v"))
        if kind == "up":
            return self._upsample_pipeline(torch)
        if kind.endswith("-refine"):
            # Stage 2 takes the distilled sigmas as they are: a static-shift copy of the scheduler.
            base = self.pipeline(kind=kind.removesuffix("-refine"))
            config = base.scheduler.config
            scheduler = type(base.scheduler).from_config(config, use_dynamic_shifting=False, shift_terminal=None)
            return self._derive(type(base).__name__, base, scheduler=scheduler)
        image = kind == "i2v"
        if image and self.family.i2v_shares_weights and not self.spec.image_path:
            return self._derive(self.family.i2v_class, self.pipeline(kind="t2v"))
        path = self.files(image)
        if path is None:
            raise EngineError(f"Cannot run: {self.missing_files_message(image)}", code="model_missing")
        parallel.check_ready(self.spec)  # a context-parallel model needs its torchrun group, before the weights load
        cls = getattr(diffusers, self.family.i2v_class if image else self.family.t2v_class)
        pipe = cls.from_pretrained(path, dtype=getattr(torch, self.spec.dtype))
        return self._place(pipe, torch)

    def _derive(self, class_name: str, base, scheduler=None):
        """A pipeline of ``class_name`` on ``base``'s modules (already placed, tiled, compiled), with
        ``base``'s pipeline settings it takes too (Wan 2.2 TI2V's ``expand_timesteps``) and, when
        given, its own ``scheduler``.

        Not ``from_pipe``: it ``.to(dtype)``-casts the shared modules (see the module docstring)."""
        import diffusers

        cls = getattr(diffusers, class_name)
        wanted = inspect.signature(cls.__init__).parameters
        components = {name: module for name, module in base.components.items() if name in wanted}
        settings = {name: value for name, value in base.config.items()
                    if name in wanted and name not in base.components and not name.startswith("_")}
        if scheduler is not None:
            components["scheduler"] = scheduler
        scheduler = components.get("scheduler")
        if (self.family.remix_style == "conditions" and self.family.conditions_api == "ltx"
                and class_name == self.family.v2v_class and getattr(scheduler.config, "use_dynamic_shifting", False)):
            # LTXConditionPipeline sets its own timesteps and passes no ``mu``: without this the
            # scheduler raises "`mu` must be passed when `use_dynamic_shifting` is set to be `True`".
            # (LTX2ConditionPipeline passes ``mu``.)
            components["scheduler"] = type(scheduler).from_config(scheduler.config, use_dynamic_shifting=False)
        pipe = cls(**components, **settings)
        vae_config = getattr(getattr(pipe, "vae", None), "config", {})
        if ("scale_factor_spatial" in vae_config
                and getattr(pipe, "vae_scale_factor_spatial", None) not in (None, vae_config["scale_factor_spatial"])):
            # diffusers 0.42.1's WanVideoToVideoPipeline derives its factors from the VAE's downsampling
            # count (x8), not from the VAE's config: Wan 2.2's VAE patches by 2 on top (x16).
            from diffusers.video_processor import VideoProcessor

            pipe.vae_scale_factor_spatial = vae_config["scale_factor_spatial"]
            pipe.vae_scale_factor_temporal = vae_config["scale_factor_temporal"]
            pipe.video_processor = VideoProcessor(vae_scale_factor=pipe.vae_scale_factor_spatial)
        pipe._sorakit_base = base  # its offload hooks are the base's: freed with it
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _upsample_pipeline(self, torch):
        """``LTX2LatentUpsamplePipeline`` on the text-to-video VAE and the configured upsampler."""
        from diffusers import LTX2LatentUpsamplePipeline
        from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

        reason = self._upsampler_problem()
        if reason:
            raise EngineError(f"Cannot run: {reason}", code="model_missing")
        base = self.pipeline(kind="t2v")
        upsampler = LTX2LatentUpsamplerModel.from_pretrained(self.upsampler_dir(),
                                                              dtype=getattr(torch, self.spec.dtype))
        upsampler.to(self.spec.device)  # small; it sees only latents, so it stays on the device
        pipe = LTX2LatentUpsamplePipeline(vae=base.vae, latent_upsampler=upsampler)
        pipe._sorakit_base = base
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _place(self, pipe, torch):
        """Put a freshly loaded pipeline on its device and apply the model's speed switches (VAE
        tiling/slicing, attention backend, cache, compile, then a warm-up run: engines/speed.py).
        A switch that cannot apply raises ``speed.SpeedSwitchError`` naming ``models.NAME.key``."""
        from . import speed

        spec = self.spec
        if spec.cpu_offload:
            pipe.enable_model_cpu_offload(device=spec.device)
        else:
            pipe.to(spec.device)
        pipe.set_progress_bar_config(disable=True)
        self._speed_applied = speed.apply(self, pipe, torch)
        return pipe

    # -- running ----------------------------------------------------------------------------------
    def operation_of(self, job: RenderJob) -> str:
        if job.operation == "generate":
            return "image" if job.image is not None else "generate"
        if job.operation in ("remix", "extend"):
            return job.operation
        raise EngineError(f"Unknown operation {job.operation!r}.", code="unsupported_operation")

    def call_arguments(self, job: RenderJob) -> dict[str, Any]:
        """The keyword arguments the pipeline is called with for ``job``."""
        return self.prepare(job).args

    def prepare(self, job: RenderJob) -> Call:
        import torch

        operation = self.operation_of(job)
        reason = self.unsupported(operation)
        if reason:
            raise EngineError(reason, code="unsupported_operation")
        f, spec, params = self.family, self.spec, job.params or {}
        steps = max(int(_first(params.get("num_inference_steps"), spec.steps, f.steps)), f.min_steps)
        guidance = _first(params.get("guidance_scale"), spec.guidance, f.guidance)
        args = {
            "prompt": f.prompt_with_style(job.prompt, job.style_id),
            "negative_prompt": _first(params.get("negative_prompt"), spec.negative_prompt, f.negative_prompt),
            "width": job.width, "height": job.height, "num_frames": f.render_frames(job.n_frames),
            "num_inference_steps": steps,
            "guidance_scale": float(guidance),
            # A CPU generator gives the same noise on every device: same seed, same frames.
            "generator": torch.Generator("cpu").manual_seed(job.seed if job.seed is not None else 0),
            "output_type": "np", **f.extra,
        }
        if "frame_rate" in args:
            args["frame_rate"] = job.fps  # LTX conditions its positions (LTX-2 also its sound) on it
        call = Call(self._kind(operation), args, steps)
        if f.guidance_via == "guider":
            # No guidance_scale argument: the pipeline's guider carries it (the checkpoint's own
            # unless the request or the model sets one).
            del args["guidance_scale"]
            given = _first(params.get("guidance_scale"), spec.guidance, False)
            call.guidance = None if given is False else float(given)
        if operation == "image":
            args["image"] = _open_image(job.image, job.width, job.height)
            self._pin_size(call)
            if self.two_stage:
                self._stage_one(job, call)
        elif operation == "remix":
            self._remix(job, call)
        elif operation == "extend":
            self._extend(job, call)
        elif self.two_stage:
            self._stage_one(job, call)
        return call

    def _pin_size(self, call: Call) -> None:
        """An image-to-video pipeline that takes no size (HunyuanVideo 1.5's picks an aspect bucket
        near the image's) is held to the planned one."""
        if call.kind == "i2v" and not self.family.i2v_takes_size:
            call.pinned_size = (call.args.pop("width"), call.args.pop("height"))

    def _stage_one(self, job: RenderJob, call: Call) -> None:
        """Two-stage generation: stage 1 at half size returns latents; stage 2 (``call.refine``)
        refines their x2 upsampling at the full size with the distilled stage-2 sigmas."""
        from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES as SIGMAS

        args = call.args
        args.update(width=job.width // 2, height=job.height // 2, output_type="latent")
        # As diffusers' LTX-2 two-stage recipe: re-noise to the first sigma, no guidance of any kind.
        call.refine = {"width": job.width, "height": job.height, "sigmas": list(SIGMAS),
                       "num_inference_steps": len(SIGMAS), "noise_scale": SIGMAS[0], "output_type": "np",
                       "guidance_scale": 1.0, "audio_guidance_scale": 1.0, "stg_scale": 0.0, "audio_stg_scale": 0.0,
                       "modality_scale": 1.0, "audio_modality_scale": 1.0, "guidance_rescale": 0.0,
                       "audio_guidance_rescale": 0.0}
        call.steps += len(SIGMAS)

    def _remix(self, job: RenderJob, call: Call) -> None:
        if job.source is None:
            raise EngineError("A remix needs a source video.", code="bad_input")
        f, args = self.family, call.args
        strength = min(max(f.remix_strength if job.strength is None else float(job.strength), 0.0), 1.0)
        rendered = f.clean_frames(job.n_frames)
        video = _source_clip(job.source, rendered, job.fps, job.width, job.height)
        if f.remix_style == "conditions":
            # LTX: the source latents start at noise level ``strength`` and are held there until the
            # schedule comes down to it (per-token timesteps): SDEdit, with every step run. LTX-2:
            # they start there and pull each step's estimate towards them by ``1 - strength``.
            args["num_frames"] = rendered
            args["conditions"] = [_condition(f.conditions_api, video, 1.0 - strength)]
            return
        steps = args["num_inference_steps"]
        if int(steps * strength) < 1:
            strength = min(1.0, 1.5 / steps)  # the pipeline runs int(steps * strength) steps: one at least
        del args["num_frames"]  # not an argument: the output has the input video's length
        args.update(video=video, strength=strength)
        call.steps = min(int(steps * strength), steps)  # as the pipeline's own get_timesteps

    def _extend(self, job: RenderJob, call: Call) -> None:
        if job.image is None:
            raise EngineError("An extension needs the source video's last frame.", code="bad_input")
        f, args = self.family, call.args
        args["num_frames"], call.skip = f.extend_frames(job.n_frames)
        last = _open_image(job.image, job.width, job.height)
        if f.extend_via == "i2v":
            if f.i2v_fixed_size:
                try:
                    f._check_fixed_size(job.width, job.height, self.spec.resolution)
                except PlanRefused as exc:
                    raise EngineError(f"Model {self.name!r} cannot extend at this size: {exc.message}",
                                      code="bad_input") from None
            args["image"] = last
            self._pin_size(call)
            return
        if job.source is None:
            raise EngineError("An extension needs the source video.", code="bad_input")
        context = f.extend_context
        clip = _source_clip(job.source, context, job.fps, job.width, job.height, tail=True)[:-1] + [last]
        args["conditions"] = [_condition(f.conditions_api, clip, 1.0)]

    def frames(self, job: RenderJob, ctx: RenderContext) -> Iterator[np.ndarray]:
        video, track = self.render_with_audio(job, ctx)
        ctx.progress(1.0)
        if track is not None:
            ctx.audio(track)  # before any frame is yielded, so before the last one
        for frame in video:
            ctx.check_cancel()
            yield frame

    def render(self, job: RenderJob, ctx: RenderContext) -> np.ndarray:
        """Run the pipeline; returns ``(n_frames, height, width, 3)`` uint8 (any sound is dropped)."""
        return self.render_with_audio(job, ctx)[0]

    def render_with_audio(self, job: RenderJob, ctx: RenderContext) -> tuple[np.ndarray, AudioTrack | None]:
        """Run the pipeline: the ``(n_frames, height, width, 3)`` uint8 frames, and their sound when
        ``job.audio`` and the family makes it (else None: a joint audio-video model still denoises
        its sound, which is then dropped)."""
        if parallel.leads(self.spec):  # rank 0 of a context-parallel group: every rank makes this same run
            return parallel.current().lead(self, "render", job, ctx)
        operation = self.operation_of(job)
        reason = self.unsupported(operation)
        if reason:
            raise EngineError(reason, code="unsupported_operation")
        pipe = self.pipeline(kind=self._kind(operation))
        call = self.prepare(job)  # decodes a remix's source: after the load, which may fail sooner
        stages = [pipe]
        if call.refine:
            stages += [self.pipeline(kind="up"), self.pipeline(kind=call.kind + "-refine")]
        ctx.check_cancel()
        try:
            with StepHook(pipe, ctx, call.steps) as hook, self._call_settings(pipe, call):
                output = pipe(**call.args)
            if call.refine:
                upsample, refine = stages[1], stages[2]
                latents = upsample(latents=output.frames, output_type="latent", return_dict=False)[0]
                ctx.check_cancel()
                with StepHook(refine, ctx, call.steps, done=hook.done):
                    output = refine(**{**call.args, **call.refine, "latents": latents, "audio_latents": output.audio})
        except Cancelled:
            raise
        except Exception as exc:
            if _is_oom(exc):
                raise EngineError(f"Out of memory while generating {job.width}x{job.height}, {job.n_frames} "
                                  "frames: try a smaller size or a shorter clip.", code="out_of_memory") from None
            raise
        finally:
            for stage in stages:
                for owner in (stage, getattr(stage, "_sorakit_base", None)):
                    if owner is not None and hasattr(owner, "maybe_free_model_hooks"):
                        owner.maybe_free_model_hooks()
            _release_memory()
        video = _to_uint8(output.frames[0], job, skip=call.skip)
        track = None
        if job.audio and self.family.audio:
            track = _audio_track(output, stages[-1], job, skip=call.skip)
        return video, track

    @contextlib.contextmanager
    def _call_settings(self, pipe, call: Call):
        """Per-run settings that live on the pipeline, not in its arguments: a guider's guidance and a
        pinned image-to-video size. Restored afterwards."""
        saved = {}
        if self.family.guidance_via == "guider" and getattr(pipe, "guider", None) is not None:
            own = pipe.__dict__.setdefault("_sorakit_guider", pipe.guider)  # the checkpoint's
            wanted = own if call.guidance is None else own.new(guidance_scale=call.guidance)
            if pipe.guider is not wanted:
                pipe.guider = wanted
        if call.pinned_size is not None:
            width, height = call.pinned_size
            processor = pipe.video_processor
            saved["size"] = processor
            processor.calculate_default_height_width = lambda *args, **kwargs: (height, width)
        try:
            yield
        finally:
            if "size" in saved:
                saved["size"].__dict__.pop("calculate_default_height_width", None)


def _condition(api: str, frames: Any, strength: float):
    """A video condition at the render's start: LTX's ``LTXVideoCondition`` or LTX-2's
    ``LTX2VideoCondition`` (a list of frames is never CRF re-compressed; a single image would be)."""
    if api == "ltx2":
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

        return LTX2VideoCondition(frames=frames, index=0, strength=strength)
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    return LTXVideoCondition(video=frames, frame_index=0, strength=strength)


def _audio_track(output: Any, pipe: Any, job: RenderJob, skip: int = 0) -> AudioTrack:
    """The sound of the yielded frames: ``output.audio[0]`` (channels, samples) at the vocoder's
    rate, from the end of the ``skip`` conditioning frames, trimmed to ``n_frames / fps`` seconds
    (the render's extra frames) and padded with silence where the causal audio VAE came up short
    (its first latent decodes to one mel frame, not four: up to 30 ms at the end)."""
    audio = output.audio[0]
    if hasattr(audio, "detach"):
        audio = audio.detach().float().cpu().numpy()
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None]
    rate = int(pipe.vocoder.config.output_sampling_rate)
    start = round(skip / job.fps * rate)
    length = round(job.n_frames / job.fps * rate)
    samples = samples[:, start:start + length]
    if samples.shape[1] < length:
        samples = np.pad(samples, ((0, 0), (0, length - samples.shape[1])))
    return AudioTrack(np.ascontiguousarray(np.clip(samples, -1.0, 1.0)), rate)


def _hub_snapshot(repo_id: str) -> Path | None:
    """A hub id's snapshot in the Hugging Face cache (nothing is downloaded), or None."""
    if "/" not in repo_id or Path(repo_id).expanduser().exists():
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not in the cache (or huggingface_hub absent)
        return None


def _first(*values: Any) -> Any:
    """The first value that is set: 0 (no guidance) and "" (no negative prompt) are choices."""
    return next(v for v in values if v is not None)


def _open_image(path: Path, width: int, height: int):
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)


def sample_indices(n_source: int, source_fps: float, count: int, fps: float, *, tail: bool = False) -> list[int]:
    """Which of a source's ``n_source`` frames (at ``source_fps``) make ``count`` frames at ``fps``:
    the nearest frame at each of the clip's times, from the source's start (``tail``: ending on its
    last frame). A source shorter than the clip is spread over it instead of held on one frame."""
    step = source_fps / fps if source_fps > 0 and fps > 0 else 1.0
    if (count - 1) * step > n_source - 1:
        step = (n_source - 1) / max(count - 1, 1)
    offsets = [min(round(i * step), n_source - 1) for i in range(count)]
    if tail:
        return [n_source - 1 - offsets[count - 1 - i] for i in range(count)]
    return offsets


def _source_clip(path: Path, count: int, fps: int, width: int, height: int, *, tail: bool = False) -> list:
    """``count`` frames of the MP4 at ``path`` sampled at ``fps`` and resized, as PIL images."""
    from PIL import Image

    from ..media.encode import decode_frames, probe

    try:
        info = probe(path)
    except Exception as exc:
        raise EngineError(f"The source video cannot be read: {exc}", code="bad_input") from None
    if info.n_frames < 1:
        raise EngineError("The source video has no frames.", code="bad_input")
    indices = sample_indices(info.n_frames, info.fps, count, fps, tail=tail)
    wanted, kept = set(indices), {}
    with contextlib.closing(decode_frames(path)) as frames:
        for i, frame in enumerate(frames):
            if i in wanted:
                kept[i] = Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC)
            if len(kept) == len(wanted):
                break
    if len(kept) < len(wanted):
        raise EngineError("The source video could not be decoded to its end.", code="bad_input")
    return [kept[i] for i in indices]


def _to_uint8(video: Any, job: RenderJob, skip: int = 0) -> np.ndarray:
    array = np.asarray(video, dtype=np.float32)
    if array.shape[1:] != (job.height, job.width, 3):
        raise EngineError(f"The model returned frames of shape {array.shape[1:]}, expected "
                          f"{(job.height, job.width, 3)}.", code="bad_output")
    if len(array) < skip + job.n_frames:
        raise EngineError(f"The model returned {len(array)} frames, expected {skip + job.n_frames}.",
                          code="bad_output")
    # The model rendered up to the next count its rule allows (CogVideoX may add more): keep the asked
    # ones, after the conditioning frames an extension renders first.
    return (np.clip(array[skip:skip + job.n_frames], 0.0, 1.0) * 255).round().astype(np.uint8)
