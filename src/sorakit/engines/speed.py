"""Speed switches: applied to a pipeline once, when it loads, from its ``[models.NAME]`` table.

What diffusers 0.42.1 offers and how each switch maps onto it (``apply``, in this order):

- ``vae_tiling`` / ``vae_slicing``: ``pipe.vae.enable_tiling()`` / ``enable_slicing()`` (every video
  VAE of the families has both; a VAE without them is an error, not a silent skip).
- ``attention_backend``: ``transformer.set_attention_backend(name)`` sets ``_attention_backend`` on
  each attention processor that dispatches through ``diffusers.models.attention_dispatch``. Refused
  at load with a clear error: a name the installed diffusers does not know (the message lists its
  names), a kernel whose package is missing (flash-attn, sageattention, xformers, kernels: diffusers'
  own requirement check), a CUDA-only backend on a CPU model, and a transformer whose processors
  do not dispatch at all (CogVideoX's ``CogVideoXAttnProcessor2_0`` calls torch's SDPA directly, so
  diffusers would silently change nothing). ``set_attention_backend`` also makes the backend the
  process-wide default for processors without one; that is undone here, so one model's backend
  never leaks into another's. The ``*_hub`` backends download a kernel from the Hugging Face Hub
  (``kernels`` package), which needs the network at load.
- ``context_parallel`` (engines/parallel.py): ``transformer.enable_parallelism(ContextParallelConfig(...))``,
  after the attention backend (diffusers checks it supports context parallelism) and before cache and
  compile; only in a worker started by torchrun. It counts as a switch: the model loads and warms up
  at worker start, on every rank together.
- ``cache``: ``transformer.enable_cache(<Config>)`` with FirstBlockCacheConfig (``first_block``),
  MagCacheConfig (``magcache``), TaylorSeerCacheConfig (``taylorseer``), FasterCacheConfig
  (``faster_cache``) or PyramidAttentionBroadcastConfig (``pab``). The hooks it registers are
  counted: none is an error (TaylorSeer's default module patterns are Flux's and match no video
  transformer's modules, so sorakit hooks every block's attention instead unless
  ``cache_identifiers`` are given). PAB and FasterCache need the current timestep: diffusers' examples
  read ``pipe.current_timestep``, which is wrong for the remix pipelines that share this transformer,
  so a forward pre-hook on the transformer records the timestep each call is made with. FasterCache
  splits cond and uncond out of one batch and filters a 5-D video output in frequency: among the
  families only CogVideoX (cond+uncond batched, ``BFCHW`` output) works; Wan (two passes) and LTX
  (token output) fail inside it, so they are refused at load, and a CogVideoX request with guidance 1
  or less (no uncond half) would fail too. The first-block, MagCache and TaylorSeer hooks keep their
  state per ``cache_context`` (Wan's separate cond and uncond passes each get their own); PAB's state
  is not per context, so on Wan the uncond pass may reuse the cond pass's attention output.
- ``compile``: ``"repeated_blocks"`` = ``transformer.compile_repeated_blocks(mode=...)`` (regional
  compilation of the classes in ``transformer._repeated_blocks``: Wan, LTX-Video, LTX-2 and
  HunyuanVideo 1.5 have them, CogVideoX's transformer does not, which is an error naming its class);
  ``"full"`` = ``transformer.compile(mode=...)`` (``nn.Module.compile``: in place, so the pipeline, its
  derived remix pipelines and the cache hooks keep the same module). Compilation itself happens at
  the first call, so a warm-up run follows.
- warm-up (``warmup = true``, the default, when compile, cache or attention_backend is set): one
  generation of 2 steps at the model's small landscape size and 5 seconds' frames (the shape most
  requests have: torch.compile specialises on it; another shape compiles again, dynamically), so
  the first user does not pay for compilation, and a switch that fails at run time (a kernel that
  cannot run on this device) fails here, at load, with the switch named. ``pipe(...)`` ends with
  ``maybe_free_model_hooks()``, which resets the cache hooks' state.
- ``cfg`` (batching cond and uncond): no pipeline of diffusers 0.42.1 has such a switch, so the key
  is refused by models.py.

Every switch applied to a model is what :func:`describe` reports in the drafts' engine metadata.
Errors are :class:`SpeedSwitchError`: both a ConfigError (the message names ``models.NAME.key``)
and an EngineError (a task that triggered the load fails with that message).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import ConfigError
from . import parallel
from .base import EngineError, RenderJob
from .families import FAMILIES
from .models import CACHE_TYPES, ModelSpec

log = logging.getLogger("sorakit.engines")

#: backends that run only on CUDA GPUs (everything but torch's math/flash SDPA on the CPU, flex, and
#: the NPU/XLA ones, which need their own devices)
CPU_BACKENDS = ("native", "_native_math", "_native_flash", "flex")
#: transformer classes FasterCache works with, and their output's tensor layout
FASTER_CACHE_FORMATS = {"CogVideoXTransformer3DModel": "BFCHW"}
#: TaylorSeer's modules when none are configured: every transformer block's attention modules
TAYLORSEER_VIDEO_ATTENTION = (r"(blocks|transformer_blocks|single_transformer_blocks)\.\d+\.[a-z_0-9]*attn[a-z_0-9]*",)
WARMUP_STEPS = 2
WARMUP_N_FRAMES = 150  # a request's frames at 30 fps: 5 seconds, the usual length


class SpeedSwitchError(ConfigError, EngineError):
    """A speed switch that cannot be applied to this model; the message names ``models.NAME.key``."""

    def __init__(self, reason: str, code: str = "speed_switch") -> None:
        EngineError.__init__(self, reason, code=code)


# -- what is applied -----------------------------------------------------------------------------------

def cache_parameters(spec: ModelSpec) -> dict[str, Any] | None:
    """The cache table with every parameter's value as it is applied (configured, else the default)."""
    if spec.cache is None:
        return None
    kind = spec.cache["type"]
    params = {key: default for key, (_, default) in CACHE_TYPES[kind]["params"].items()}
    params.update({k: v for k, v in spec.cache.items() if k != "type"})
    if kind == "magcache" and params["num_inference_steps"] is None:
        params["num_inference_steps"] = spec.steps or FAMILIES[spec.family].steps
    if kind == "pab" and not any(params[f"{a}_attention_block_skip_range"] for a in ("spatial", "temporal", "cross")):
        params["spatial_attention_block_skip_range"] = 2  # diffusers' own fallback, made explicit
    for key, value in params.items():
        if isinstance(value, tuple):
            params[key] = list(value)
    return {"type": kind, **params}


def describe(spec: ModelSpec) -> dict[str, Any]:
    """The speed switches of ``spec`` as drafts record them (``engine.speed``)."""
    cache = cache_parameters(spec)
    if cache and cache.get("mag_ratios"):
        cache["mag_ratios"] = f"{len(cache['mag_ratios'])} values"
    info: dict[str, Any] = {"compile": spec.compile}
    if spec.compile_mode:
        info["compile_mode"] = spec.compile_mode
    info.update({"attention_backend": spec.attention_backend, "cache": cache,
                 "vae_tiling": spec.vae_tiling, "vae_slicing": spec.vae_slicing})
    if spec.context_parallel:
        info["context_parallel"] = parallel.describe(spec)
    return info


def summary(spec: ModelSpec) -> str:
    """One line for ``sorakit models list``: the switches that are on."""
    parts = []
    if spec.compile != "off":
        parts.append(f"compile={spec.compile}" + (f" ({spec.compile_mode})" if spec.compile_mode else ""))
    if spec.attention_backend:
        parts.append(f"attention={spec.attention_backend}")
    if spec.cache:
        parts.append(f"cache={spec.cache['type']}")
    parts += [name for name in ("vae_tiling", "vae_slicing") if getattr(spec, name)]
    if spec.context_parallel:
        parts.append(parallel.summary(spec))
    return ", ".join(parts) or "-"


def denoisers(pipe) -> list[tuple[str, Any]]:
    """The pipeline's transformers (Wan 2.2 A14B has a second one for the low-noise steps)."""
    return [(name, module) for name in ("transformer", "transformer_2")
            if (module := getattr(pipe, name, None)) is not None]


def cache_hooks(module) -> list[tuple[str, str]]:
    """(module name, hook name) for every diffusers hook registered under ``module``."""
    found = []
    for name, sub in module.named_modules():
        registry = getattr(sub, "_diffusers_hook", None)
        if registry is not None:
            found += [(name, hook) for hook in registry.hooks]
    return found


def compiled_modules(module) -> list[str]:
    """Names of the modules under ``module`` that ``nn.Module.compile`` has compiled ("" is itself)."""
    return [name for name, sub in module.named_modules() if getattr(sub, "_compiled_call_impl", None) is not None]


def attention_backends(module) -> set[str | None]:
    """The backend each dispatching attention processor under ``module`` is set to (None: the default)."""
    found = set()
    for sub in module.modules():
        processor = getattr(sub, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend"):
            backend = processor._attention_backend
            found.add(getattr(backend, "value", backend))
    return found


# -- applying them -----------------------------------------------------------------------------------

def apply(engine, pipe, torch) -> dict[str, Any]:
    """Apply ``engine.spec``'s switches to ``pipe`` (already on its device) and warm it up.

    Returns what was applied (:func:`describe`), with the warm-up's seconds when one ran."""
    spec = engine.spec
    _vae(spec, pipe)
    for label, transformer in denoisers(pipe):
        if spec.attention_backend:
            _attention_backend(spec, transformer, label)
        if spec.context_parallel:  # after the backend (diffusers checks it), before cache and compile
            parallel.enable(spec, transformer, label)
        if spec.cache:
            _cache(spec, transformer, label)
        if spec.compile != "off":
            _compile(spec, transformer, label)
    report = describe(spec)
    if spec.warmup and spec.speed_switches:
        report["warmup_s"] = round(warm_up(engine, pipe, torch), 3)
    if spec.speed_switches or spec.vae_tiling or spec.vae_slicing:
        log.info("model %s: speed switches %s", spec.name, report)
    return report


def _vae(spec: ModelSpec, pipe) -> None:
    vae = getattr(pipe, "vae", None)
    for key, method in (("vae_tiling", "enable_tiling"), ("vae_slicing", "enable_slicing")):
        if not getattr(spec, key):
            continue
        if vae is None or not hasattr(vae, method):
            raise SpeedSwitchError(f"models.{spec.name}.{key}: the VAE of this pipeline "
                                   f"({type(vae).__name__}) has no {method}(); remove the key.")
        try:
            getattr(vae, method)()
        except NotImplementedError as exc:
            raise SpeedSwitchError(f"models.{spec.name}.{key}: {exc}") from None


def _attention_backend(spec: ModelSpec, transformer, label: str) -> None:
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    where, name, cls = f"models.{spec.name}.attention_backend", spec.attention_backend, type(transformer).__name__
    valid = [b.value for b in AttentionBackendName]
    if name not in valid:
        raise SpeedSwitchError(f"{where}: {name!r} is not an attention backend of the installed diffusers; "
                               f"its backends are {', '.join(valid)}")
    if name not in CPU_BACKENDS and not spec.device.startswith("cuda"):
        raise SpeedSwitchError(f"{where}: {name!r} runs only on a CUDA GPU and this model's device is "
                               f"{spec.device!r}; on the CPU use one of {', '.join(CPU_BACKENDS)}")
    processors = [sub.processor for sub in transformer.modules() if getattr(sub, "processor", None) is not None]
    if not any(hasattr(p, "_attention_backend") for p in processors):
        kinds = ", ".join(sorted({type(p).__name__ for p in processors})) or "none"
        raise SpeedSwitchError(f"{where}: the {label} of this model ({cls}) has attention processors ({kinds}) "
                               f"that do not go through diffusers' attention dispatcher, so "
                               f"set_attention_backend would change nothing; remove the key")
    previous = _AttentionBackendRegistry._active_backend
    try:
        transformer.set_attention_backend(name)
    except (RuntimeError, ValueError, ImportError, OSError) as exc:
        raise SpeedSwitchError(f"{where}: {name!r} cannot be used here: {exc}") from None
    finally:
        # set_attention_backend also makes it the process-wide default: keep the default for the
        # processors of other models (this model's processors carry their own backend now).
        _AttentionBackendRegistry.set_active_backend(previous)


def _timestep_recorder(transformer, torch):
    """A callback returning the timestep of the transformer's current call (PAB, FasterCache)."""
    holder = {"t": 1000.0}

    @torch.compiler.disable
    def record(module, args, kwargs):
        t = kwargs.get("timestep")
        if t is None and len(args) > 1:
            t = args[1]
        if t is not None:
            holder["t"] = float(t.float().max()) if hasattr(t, "float") else float(t)

    transformer.register_forward_pre_hook(record, with_kwargs=True)
    return lambda: holder["t"]


def cache_config(spec: ModelSpec, transformer, torch):
    """The diffusers cache config object for ``spec.cache`` on ``transformer``."""
    import diffusers.hooks as hooks

    params = cache_parameters(spec)
    kind = params.pop("type")
    where, cls = f"models.{spec.name}.cache", type(transformer).__name__
    if kind == "first_block":
        return hooks.FirstBlockCacheConfig(**params)
    if kind == "magcache":
        return hooks.MagCacheConfig(**params)
    if kind == "taylorseer":
        params["taylor_factors_dtype"] = getattr(torch, params["taylor_factors_dtype"])
        if not (params["cache_identifiers"] or params["skip_predict_identifiers"] or params["use_lite_mode"]):
            params["cache_identifiers"] = list(TAYLORSEER_VIDEO_ATTENTION)
        return hooks.TaylorSeerCacheConfig(**params)
    ranges = {k: tuple(v) for k, v in params.items() if k.endswith("_range") and isinstance(v, list)}
    params.update(ranges)
    if kind == "pab":
        return hooks.PyramidAttentionBroadcastConfig(current_timestep_callback=_timestep_recorder(transformer, torch),
                                                     **params)
    # faster_cache
    if cls not in FASTER_CACHE_FORMATS:
        raise SpeedSwitchError(
            f"{where}: faster_cache does not work with {cls} in diffusers 0.42.1: it needs cond and uncond "
            f"batched into one forward and a 5-D video output, which among sorakit's families only "
            f"CogVideoX has ({', '.join(FASTER_CACHE_FORMATS)}); use first_block, magcache, taylorseer or pab")
    weight = params.pop("attention_weight")
    return hooks.FasterCacheConfig(current_timestep_callback=_timestep_recorder(transformer, torch),
                                   attention_weight_callback=lambda _module: weight,
                                   tensor_format=FASTER_CACHE_FORMATS[cls], **params)


def _cache(spec: ModelSpec, transformer, label: str) -> None:
    import torch

    where, cls = f"models.{spec.name}.cache", type(transformer).__name__
    if not hasattr(transformer, "enable_cache"):
        raise SpeedSwitchError(f"{where}: the {label} of this model ({cls}) takes no diffusers cache "
                               f"(it has no enable_cache); remove the key")
    if spec.cache["type"] in ("first_block", "magcache"):
        _check_block_caching(spec, transformer)
    before = len(cache_hooks(transformer))
    config = cache_config(spec, transformer, torch)
    try:
        transformer.enable_cache(config)
    except SpeedSwitchError:
        raise
    except Exception as exc:  # noqa: BLE001 - diffusers' own reasons (e.g. an unregistered block class)
        raise SpeedSwitchError(f"{where}: {spec.cache['type']} cannot be applied to {cls}: "
                               f"{type(exc).__name__}: {exc}") from None
    if len(cache_hooks(transformer)) == before:
        with contextlib.suppress(Exception):
            transformer.disable_cache()
        raise SpeedSwitchError(f"{where}: {spec.cache['type']} registered no hook on any module of {cls}, so it "
                               f"would change nothing; check the cache's module patterns or remove the key")


def _check_block_caching(spec: ModelSpec, transformer) -> None:
    """First-block and MagCache hook the transformer's block lists: diffusers must know each block
    class's signature (its TransformerBlockRegistry), and there must be a head and a tail block."""
    import torch
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
    from diffusers.hooks._helpers import TransformerBlockRegistry

    where, kind, cls = f"models.{spec.name}.cache", spec.cache["type"], type(transformer).__name__
    blocks = [block for name, child in transformer.named_children()
              if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList)
              for block in child]
    unknown = set()
    for block in blocks:
        try:
            TransformerBlockRegistry.get(type(block))
        except ValueError:
            unknown.add(type(block).__name__)
    if unknown:
        raise SpeedSwitchError(f"{where}: {kind} hooks {cls}'s transformer blocks, and diffusers 0.42.1 does not "
                               f"know the block class {', '.join(sorted(unknown))} (its TransformerBlockRegistry); "
                               f"use taylorseer or pab for this model")
    if len(blocks) < 2:
        raise SpeedSwitchError(f"{where}: {kind} needs at least two transformer blocks in {cls}, which has "
                               f"{len(blocks)}; use taylorseer or pab for this model")


def _compile(spec: ModelSpec, transformer, label: str) -> None:
    where, cls = f"models.{spec.name}.compile", type(transformer).__name__
    kwargs = {"mode": spec.compile_mode} if spec.compile_mode else {}
    if spec.compile == "repeated_blocks":
        if not getattr(transformer, "_repeated_blocks", None):
            raise SpeedSwitchError(f"{where}: \"repeated_blocks\" needs a transformer whose class lists its "
                                   f"repeated blocks (_repeated_blocks), and {cls} (the {label} of this model) "
                                   f"does not in diffusers 0.42.1; use compile = \"full\"")
        try:
            transformer.compile_repeated_blocks(**kwargs)
        except ValueError as exc:
            raise SpeedSwitchError(f"{where}: {exc}") from None
    else:
        transformer.compile(**kwargs)


# -- warm-up --------------------------------------------------------------------------------------

def warm_up(engine, pipe, torch) -> float:
    """One short generation on ``pipe`` (so compilation happens now); its seconds."""
    spec, family = engine.spec, engine.family
    image = type(pipe).__name__ == family.i2v_class and family.i2v_class != family.t2v_class
    plan = engine.plan("landscape", "small", WARMUP_N_FRAMES, image=image)
    switches = ", ".join(f"{k} = {v!r}" for k, v in describe(spec).items() if v not in (None, False, "off"))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sorakit-warmup-") as tmp:
        job = RenderJob("warm-up", "warm-up", plan.width, plan.height, plan.n_frames, plan.fps, seed=0,
                        image=_grey_image(Path(tmp), plan.width, plan.height) if image else None)
        try:
            call = engine.prepare(job)
            call.args["num_inference_steps"] = max(WARMUP_STEPS, family.min_steps)
            with torch.no_grad():
                pipe(**call.args)
        except Exception as exc:  # noqa: BLE001 - reported as the switches' failure, at load
            raise SpeedSwitchError(f"models.{spec.name}: the warm-up run with {switches} failed at "
                                   f"{plan.width}x{plan.height}, {plan.n_frames} frames: "
                                   f"{type(exc).__name__}: {str(exc)[:500]}") from exc
        finally:
            with contextlib.suppress(Exception):
                pipe.maybe_free_model_hooks()  # the cache hooks' state, even when the run failed
    seconds = time.perf_counter() - started
    log.info("model %s: warm-up (%dx%d, %d frames, %d steps) took %.1f s", spec.name, plan.width, plan.height,
             plan.n_frames, max(WARMUP_STEPS, family.min_steps), seconds)
    return seconds


def _grey_image(folder: Path, width: int, height: int) -> Path:
    from PIL import Image

    path = folder / "warm-up.png"
    Image.new("RGB", (width, height), (128, 128, 128)).save(path)
    return path
