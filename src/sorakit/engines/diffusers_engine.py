"""The diffusers engine: open text-to-video models (Wan, LTX-Video, CogVideoX) behind the API.

- A pipeline loads once per worker thread and stays resident (schedulers keep per-run state and
  are not thread-safe, so threads never share one).
- Progress and cancellation come from wrapping the scheduler's ``step``: every family gets the
  same hook, and raising :class:`Cancelled` there stops the run before the VAE decode (setting
  ``pipe._interrupt`` would still decode).
- Denoising is 90 % of the engine's stage, the VAE decode the rest; the worker adds encoding.
- The pipeline renders the next frame count on the family's ``tk+1`` rule at or above
  ``job.n_frames`` and only ``job.n_frames`` frames are yielded, so an exact plan (the official
  API's seconds * fps) comes out exact; web plans are already on the rule and render as asked.
- Out-of-memory and other errors fail only the task; cache hooks are reset and GPU memory
  released in a ``finally`` so the next task starts clean.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .base import Cancelled, Engine, EngineError, Plan, PlanRefused, RenderContext, RenderJob
from .families import FAMILIES
from .models import ModelSpec, local_dir

EXTRA = "pip install 'sorakit[diffusers]'"
DENOISE_SHARE = 0.9
PRESENCE_TTL = 30.0  # seconds a "files present" answer is trusted (create checks it)


def _missing_extra() -> str | None:
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return f"the diffusers extra is not installed ({exc.name} is missing): {EXTRA}"
    return None


class StepHook:
    """Wraps ``pipe.scheduler.step``: counts steps into progress, raises on cancel."""

    def __init__(self, pipe, ctx: RenderContext, total: int) -> None:
        self.pipe, self.ctx, self.total, self.done = pipe, ctx, max(total, 1), 0

    def __enter__(self) -> StepHook:
        scheduler = self.pipe.scheduler
        original = scheduler.step

        # wraps() keeps step's signature visible: CogVideoX inspects it to decide whether to pass
        # its generator, and without it silently draws from the global RNG (seeds stop working).
        @functools.wraps(original)
        def step(*args, **kwargs):
            self.ctx.check_cancel()
            result = original(*args, **kwargs)
            self.done += 1
            self.ctx.progress(DENOISE_SHARE * min(self.done / self.total, 1.0))
            return result

        scheduler.step = step
        return self

    def __exit__(self, *exc) -> None:
        self.pipe.scheduler.__dict__.pop("step", None)


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, MemoryError) or (oom and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def _release_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class DiffusersEngine(Engine):
    placeholder = False
    progress_share = 0.9

    def __init__(self, spec: ModelSpec, weights_dir: Path) -> None:
        self.spec, self.family = spec, FAMILIES[spec.family]
        self.name = spec.name
        self.weights_dir = weights_dir
        self._local = threading.local()
        self._presence: tuple[float, str | None] | None = None

    @property
    def supports_image(self) -> bool:  # type: ignore[override]
        return bool(self.spec.image_path) or self.family.i2v_shares_weights

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "placeholder": False, "family": self.family.name, "path": self.spec.path}

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
        reason = _missing_extra() or (None if self.files() else self.missing_files_message())
        self._presence = (now, reason)
        return reason

    # -- loading --------------------------------------------------------------------------------
    def pipeline(self, image: bool = False):
        """This thread's pipeline, loaded on first use and kept."""
        key = "i2v" if image else "t2v"
        cache = self._local.__dict__
        if key not in cache:
            cache[key] = self._load(image)
        return cache[key]

    def _load(self, image: bool):
        reason = _missing_extra()
        if reason:
            raise EngineError(f"Model {self.name!r} cannot run: {reason}", code="extra_missing")
        import diffusers
        import torch

        if self.spec.device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"Model {self.name!r} is set to device {self.spec.device!r}, but no CUDA GPU is "
                              f"available; set models.{self.name}.device = \"cpu\".", code="device_missing")
        if image and self.family.i2v_shares_weights and not self.spec.image_path:
            cls = getattr(diffusers, self.family.i2v_class)
            return cls.from_pipe(self.pipeline(False))
        path = self.files(image)
        if path is None:
            raise EngineError(f"Cannot run: {self.missing_files_message(image)}", code="model_missing")
        cls = getattr(diffusers, self.family.i2v_class if image else self.family.t2v_class)
        pipe = cls.from_pretrained(path, dtype=getattr(torch, self.spec.dtype))
        return self._place(pipe, torch)

    def _place(self, pipe, torch):
        spec = self.spec
        if spec.cpu_offload:
            pipe.enable_model_cpu_offload(device=spec.device)
        else:
            pipe.to(spec.device)
        if spec.vae_tiling and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()
        if spec.vae_slicing and hasattr(pipe.vae, "enable_slicing"):
            pipe.vae.enable_slicing()
        if spec.compile:
            pipe.transformer = torch.compile(pipe.transformer)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -- running ----------------------------------------------------------------------------------
    def call_arguments(self, job: RenderJob) -> dict[str, Any]:
        import torch

        f, spec, params = self.family, self.spec, job.params or {}
        steps = max(int(_first(params.get("num_inference_steps"), spec.steps, f.steps)), f.min_steps)
        args = {
            "prompt": f.prompt_with_style(job.prompt, job.style_id),
            "negative_prompt": _first(params.get("negative_prompt"), spec.negative_prompt, f.negative_prompt),
            "width": job.width, "height": job.height, "num_frames": f.render_frames(job.n_frames),
            "num_inference_steps": steps,
            "guidance_scale": float(_first(params.get("guidance_scale"), spec.guidance, f.guidance)),
            # A CPU generator gives the same noise on every device: same seed, same frames.
            "generator": torch.Generator("cpu").manual_seed(job.seed if job.seed is not None else 0),
            "output_type": "np", **f.extra,
        }
        if "frame_rate" in args:
            args["frame_rate"] = job.fps  # LTX conditions its positions on the frame rate
        if job.image is not None:
            from PIL import Image

            with Image.open(job.image) as img:
                args["image"] = img.convert("RGB").resize((job.width, job.height))
        return args

    def frames(self, job: RenderJob, ctx: RenderContext) -> Iterator[np.ndarray]:
        video = self.render(job, ctx)
        ctx.progress(1.0)
        for frame in video:
            ctx.check_cancel()
            yield frame

    def render(self, job: RenderJob, ctx: RenderContext) -> np.ndarray:
        """Run the pipeline; returns ``(n_frames, height, width, 3)`` uint8."""
        pipe = self.pipeline(image=job.image is not None)
        args = self.call_arguments(job)
        try:
            with StepHook(pipe, ctx, args["num_inference_steps"]):
                output = pipe(**args)
        except Cancelled:
            raise
        except Exception as exc:
            if _is_oom(exc):
                raise EngineError(f"Out of memory while generating {job.width}x{job.height}, {job.n_frames} "
                                  "frames: try a smaller size or a shorter clip.", code="out_of_memory") from None
            raise
        finally:
            if hasattr(pipe, "maybe_free_model_hooks"):
                pipe.maybe_free_model_hooks()
            _release_memory()
        return _to_uint8(output.frames[0], job)


def _first(*values: Any) -> Any:
    """The first value that is set: 0 (no guidance) and "" (no negative prompt) are choices."""
    return next(v for v in values if v is not None)


def _to_uint8(video: Any, job: RenderJob) -> np.ndarray:
    array = np.asarray(video, dtype=np.float32)
    if array.shape[1:] != (job.height, job.width, 3):
        raise EngineError(f"The model returned frames of shape {array.shape[1:]}, expected "
                          f"{(job.height, job.width, 3)}.", code="bad_output")
    if len(array) < job.n_frames:
        raise EngineError(f"The model returned {len(array)} frames, expected {job.n_frames}.",
                          code="bad_output")
    # The model rendered up to the next count its rule allows (CogVideoX may add more): keep the asked ones.
    return (np.clip(array[:job.n_frames], 0.0, 1.0) * 255).round().astype(np.uint8)
