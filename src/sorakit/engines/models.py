"""Configured models: ``[models.NAME]`` tables of ``config.toml``, one diffusers engine each.

    [models.wan]
    family = "wan"                  # a family of engines/families.py: wan | ltx | cogvideox | ...
    path = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"   # a local directory or a hub id
    image_path = "..."              # optional: weights of the family's image-to-video pipeline
    upsampler_path = "..."          # optional: a latent upsampler for two-stage generation (LTX-2)
    dtype = "bfloat16"              # float32 | float16 | bfloat16
    device = "cuda"                 # cuda | cpu | cuda:1 | mps | xpu ...
    cpu_offload = false             # model CPU offload (accelerate): less GPU memory, slower
    steps = 50                      # default denoising steps (family default when absent)
    guidance = 5.0                  # default guidance scale (family default when absent)
    negative_prompt = "..."         # default negative prompt (family default when absent)
    resolution = {small = [832, 480], large = [1280, 720]}   # landscape (w, h); portrait swaps
    max_frames = 81                 # longest clip in the model's own frames
    fps = 16                        # the model's frame rate (Wan 2.2 TI2V 5B: 24, with max_frames 121)

    # speed switches (applied once when the pipeline loads; see engines/speed.py)
    compile = "off"                 # off | repeated_blocks | full   (true, the old spelling, is "full")
    compile_mode = "max-autotune-no-cudagraphs"   # optional torch.compile mode
    attention_backend = "native"    # diffusers' set_attention_backend: native, flash, sage, _native_flash, ...
    cache = {type = "first_block", threshold = 0.05}   # first_block | magcache | taylorseer | faster_cache | pab
    vae_tiling = false
    vae_slicing = false
    warmup = true                   # a short generation at load when compile/cache/attention_backend is set
    context_parallel = {ulysses = 2}   # one model on several GPUs under torchrun (engines/parallel.py,
                                    # docs/parallel.md): ring = N and/or ulysses = N, anything = true

``sorakit models add NAME --preset P`` writes such a table from the catalogue (engines/catalogue.py).
A hub id is looked for in the models dir (``sorakit models pull NAME`` puts it there) and in the
Hugging Face cache; nothing is downloaded at run time.

Everything here is checked without importing torch or diffusers: an unknown key or a value of the
wrong kind is a :class:`ConfigError` naming ``models.NAME.key`` when the configuration loads. What
depends on the model itself (does its transformer have repeated blocks, is the attention kernel
installed) is checked when the pipeline loads (engines/speed.py), also with a clear error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from . import families as _families
from . import parallel as _parallel

DTYPES = ("float32", "float16", "bfloat16")
COMPILE_MODES = ("off", "repeated_blocks", "full")
#: torch.compile's ``mode`` values (torch 2.5 .. 2.13)
TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: diffusers 0.42.1's ``AttentionBackendName`` values (diffusers/models/attention_dispatch.py); the
#: installed diffusers' own list is checked again when the model loads
ATTENTION_BACKENDS = (
    "flash", "flash_hub", "flash_varlen", "flash_varlen_hub", "flash_4_hub", "_flash_3", "_flash_varlen_3",
    "_flash_3_hub", "_flash_3_varlen_hub", "aiter_fa2_hub", "flex", "native", "_native_cudnn",
    "_native_efficient", "_native_flash", "_native_math", "_native_npu", "_native_xla", "sage", "sage_hub",
    "sage_blackwell_hub", "sage_varlen", "_sage_qk_int8_pv_fp8_cuda", "_sage_qk_int8_pv_fp8_cuda_sm90",
    "_sage_qk_int8_pv_fp16_cuda", "_sage_qk_int8_pv_fp16_triton", "xformers",
)
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?|xpu(:\d+)?)$")
_CFG_UNSUPPORTED = (
    "no pipeline in diffusers 0.42.1 has a switch for batching classifier-free guidance: LTX-Video, "
    "LTX-2 and CogVideoX always run cond and uncond as one batch of 2, Wan always runs them as two "
    "passes and HunyuanVideo 1.5 runs them through its guider one batch at a time. Remove the key."
)


def _families_known() -> tuple[str, ...]:
    return tuple(_families.FAMILIES)


#: the families known when this module was imported (engines/families.py is the source of truth)
FAMILIES = _families_known()


# -- cache configurations ---------------------------------------------------------------------------
# Each cache type: its diffusers config class and, per parameter, (kind, default). The defaults are
# diffusers 0.42.1's; sorakit passes every value explicitly, so what a draft reports is what ran.
# Kinds: float+ (> 0), float0 (>= 0), ratio (0..1), int1 (>= 1), int0 (>= 0), int1? (>= 1 or absent),
# bool, range (two increasing timesteps), floats (a list of numbers), regexes (a list of patterns),
# dtype ("float32" | "float16" | "bfloat16").
CACHE_TYPES: dict[str, dict[str, Any]] = {
    "first_block": {
        "class": "FirstBlockCacheConfig",
        "params": {"threshold": ("float+", 0.05)},
    },
    "magcache": {
        "class": "MagCacheConfig",
        "params": {"threshold": ("float+", 0.06), "max_skip_steps": ("int1", 3), "retention_ratio": ("ratio", 0.2),
                   "num_inference_steps": ("int1?", None),  # None: the model's default steps
                   "mag_ratios": ("floats", None), "calibrate": ("bool", False)},
    },
    "taylorseer": {
        "class": "TaylorSeerCacheConfig",
        "params": {"cache_interval": ("int1", 5), "disable_cache_before_step": ("int0", 3),
                   "disable_cache_after_step": ("int0?", None), "max_order": ("int1", 1),
                   "taylor_factors_dtype": ("dtype", "bfloat16"),
                   "cache_identifiers": ("regexes", None),  # None: every block's attention (speed.py)
                   "skip_predict_identifiers": ("regexes", None), "use_lite_mode": ("bool", False)},
    },
    "faster_cache": {
        "class": "FasterCacheConfig",
        "params": {"spatial_attention_block_skip_range": ("int1", 2),
                   "temporal_attention_block_skip_range": ("int1?", None),
                   "spatial_attention_timestep_skip_range": ("range", (-1, 681)),
                   "temporal_attention_timestep_skip_range": ("range", (-1, 681)),
                   "low_frequency_weight_update_timestep_range": ("range", (99, 901)),
                   "high_frequency_weight_update_timestep_range": ("range", (-1, 301)),
                   "alpha_low_frequency": ("float+", 1.1), "alpha_high_frequency": ("float+", 1.1),
                   "unconditional_batch_skip_range": ("int1", 5),
                   "unconditional_batch_timestep_skip_range": ("range", (-1, 641)),
                   "attention_weight": ("float0", 0.5),  # diffusers' attention_weight_callback, as a constant
                   "is_guidance_distilled": ("bool", False)},
    },
    "pab": {
        "class": "PyramidAttentionBroadcastConfig",
        "params": {"spatial_attention_block_skip_range": ("int1?", None),  # none of the three: spatial 2
                   "temporal_attention_block_skip_range": ("int1?", None),
                   "cross_attention_block_skip_range": ("int1?", None),
                   "spatial_attention_timestep_skip_range": ("range", (100, 800)),
                   "temporal_attention_timestep_skip_range": ("range", (100, 800)),
                   "cross_attention_timestep_skip_range": ("range", (100, 800))},
    },
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    path: str
    image_path: str | None = None
    #: a latent upsampler for two-stage generation (the LTX-2 family; read by diffusers_engine.py)
    upsampler_path: str | None = None
    dtype: str = "bfloat16"
    device: str = "cuda"
    cpu_offload: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    compile: str = "off"
    compile_mode: str | None = None
    attention_backend: str | None = None
    #: ``{"type": ..., param: value}`` as configured (validated; defaults are filled in by speed.py)
    cache: dict[str, Any] | None = None
    warmup: bool = True
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    resolution: dict[str, tuple[int, int]] = field(default_factory=dict)
    max_frames: int | None = None
    fps: int | None = None
    #: ``{"ring": r, "ulysses": u, "anything": bool}``: split the denoiser over r x u GPUs (parallel.py)
    context_parallel: dict[str, Any] | None = None

    @property
    def speed_switches(self) -> bool:
        """Whether a switch that changes the denoiser is on (these get a warm-up run at load)."""
        return (self.compile != "off" or self.cache is not None or self.attention_backend is not None
                or self.context_parallel is not None)


# -- checking values ---------------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _kind(where: str, value: Any, kind: str) -> Any:
    """``value`` checked against ``kind``; a ConfigError naming ``where`` otherwise."""
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None and optional:
        return None
    wants = {
        "str": "a string", "bool": "true or false", "int1": "a whole number of at least 1",
        "int0": "a whole number of at least 0", "float+": "a number above 0", "float0": "a number of at least 0",
        "ratio": "a number from 0 to 1", "range": "two increasing timesteps, e.g. [100, 800]",
        "floats": "a list of numbers", "regexes": "a list of regular expressions (matched against module names)",
        "dtype": "one of " + ", ".join(DTYPES),
    }[kind]
    ok = {
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "int1": lambda v: _is_int(v) and v >= 1,
        "int0": lambda v: _is_int(v) and v >= 0,
        "float+": lambda v: _is_number(v) and v > 0,
        "float0": lambda v: _is_number(v) and v >= 0,
        "ratio": lambda v: _is_number(v) and 0 <= v <= 1,
        "range": lambda v: (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(x) for x in v)
                            and v[0] < v[1]),
        "floats": lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_number(x) for x in v),
        "regexes": lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, str) for x in v),
        "dtype": lambda v: v in DTYPES,
    }[kind](value)
    if not ok:
        raise ConfigError(f"{where} must be {wants}, not {value!r}")
    if kind == "regexes":
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{where}: {pattern!r} is not a regular expression ({exc})") from None
        return list(value)
    if kind in ("floats", "range"):
        return [float(x) if kind == "floats" else x for x in value]
    if kind in ("float+", "float0", "ratio"):
        return float(value)
    return value


def parse_cache(name: str, raw: Any) -> dict[str, Any] | None:
    """``cache = {type = "...", ...}`` checked: the type, each parameter's name and value."""
    where = f"models.{name}.cache"
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table such as {{type = \"first_block\", threshold = 0.05}}, "
                          f"not {raw!r}")
    kind = raw.get("type")
    if kind not in CACHE_TYPES:
        raise ConfigError(f"{where}.type must be one of {', '.join(CACHE_TYPES)}, not {kind!r}")
    params = CACHE_TYPES[kind]["params"]
    unknown = sorted(set(raw) - {"type"} - set(params))
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) {', '.join(unknown)} for type {kind!r}; "
                          f"it takes {', '.join(params)}")
    found: dict[str, Any] = {"type": kind}
    for key, value in raw.items():
        if key != "type":
            found[key] = _kind(f"{where}.{key}", value, params[key][0])
    if kind == "magcache" and not found.get("calibrate") and not found.get("mag_ratios"):
        raise ConfigError(f"{where}.mag_ratios is required for magcache: MagCache's per-model ratios (its "
                          f"authors publish them for some models), or set calibrate = true once to print them")
    if (kind == "taylorseer" and found.get("disable_cache_after_step") is not None
            and found["disable_cache_after_step"] <= found.get("disable_cache_before_step", 3)):
        raise ConfigError(f"{where}.disable_cache_after_step must come after disable_cache_before_step")
    return found


def _resolution(name: str, raw: Any) -> dict[str, tuple[int, int]]:
    if raw is None:
        return {}
    where = f"models.{name}.resolution"
    try:
        found = {size: (wh[0], wh[1]) for size, wh in dict(raw).items() if len(wh) == 2}
        if len(found) != len(dict(raw)):
            raise ValueError
    except (TypeError, ValueError, IndexError, KeyError):
        raise ConfigError(f"{where}: expected {{small = [w, h], large = [w, h]}}") from None
    unknown = set(found) - {"small", "large"}
    if unknown:
        raise ConfigError(f"{where}: unknown size(s) {', '.join(sorted(unknown))}")
    for size, (w, h) in found.items():
        if not (_is_int(w) and _is_int(h) and w > 0 and h > 0):
            raise ConfigError(f"{where}.{size} must be two whole numbers of pixels [w, h], not {[w, h]!r}")
    return found


def _compile(name: str, value: Any) -> str:
    if value is True:  # the old spelling: torch.compile(transformer)
        return "full"
    if value is False:
        return "off"
    if value not in COMPILE_MODES:
        raise ConfigError(f"models.{name}.compile must be one of {', '.join(repr(m) for m in COMPILE_MODES)} "
                          f"(true, the old spelling, means \"full\"), not {value!r}")
    return value


#: per key: how its value is checked (families and the special keys are handled in parse_spec)
_SIMPLE = {
    "path": "str", "image_path": "str?", "upsampler_path": "str?", "cpu_offload": "bool", "vae_tiling": "bool",
    "vae_slicing": "bool", "warmup": "bool", "steps": "int1?", "negative_prompt": "str?", "max_frames": "int1?",
    "fps": "int1?",
}


def parse_spec(name: str, table: dict[str, Any]) -> ModelSpec:
    known = set(ModelSpec.__dataclass_fields__) - {"name"}
    if "cfg" in table:
        raise ConfigError(f"models.{name}.cfg: {_CFG_UNSUPPORTED}")
    unknown = set(table) - known
    if unknown:
        keys = ", ".join(f"models.{name}.{k}" for k in sorted(unknown))
        raise ConfigError(f"models.{name}: unknown key(s) {keys}; the keys are {', '.join(sorted(known))}")
    families = _families_known()
    if table.get("family") not in families:
        raise ConfigError(f"models.{name}.family must be one of {', '.join(families)}, not {table.get('family')!r}")
    if not table.get("path"):
        raise ConfigError(f"models.{name}.path is required (a local directory or a hub id)")
    values: dict[str, Any] = dict(table)
    for key, kind in _SIMPLE.items():
        if key in table:
            values[key] = _kind(f"models.{name}.{key}", table[key], kind)
    if table.get("dtype", "bfloat16") not in DTYPES:
        raise ConfigError(f"models.{name}.dtype must be one of {', '.join(DTYPES)}, not {table.get('dtype')!r}")
    device = table.get("device", "cuda")
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f"models.{name}.device must be cpu, cuda, cuda:N, mps or xpu, not {device!r}")
    if table.get("guidance") is not None:
        values["guidance"] = _kind(f"models.{name}.guidance", table["guidance"], "float0")
    values["compile"] = _compile(name, table.get("compile", "off"))
    mode = table.get("compile_mode")
    if mode is not None and mode not in TORCH_COMPILE_MODES:
        raise ConfigError(f"models.{name}.compile_mode must be one of {', '.join(TORCH_COMPILE_MODES)}, "
                          f"not {mode!r}")
    if mode is not None and values["compile"] == "off":
        raise ConfigError(f"models.{name}.compile_mode is set but models.{name}.compile is \"off\"")
    backend = table.get("attention_backend")
    if backend is not None and backend not in ATTENTION_BACKENDS:
        raise ConfigError(f"models.{name}.attention_backend must be one of {', '.join(ATTENTION_BACKENDS)} "
                          f"(diffusers' AttentionBackendName), not {backend!r}")
    values["cache"] = parse_cache(name, table.get("cache"))
    values["resolution"] = _resolution(name, table.get("resolution"))
    values["context_parallel"] = _parallel.parse(name, table)
    try:
        return ModelSpec(name=name, **values)
    except TypeError as exc:
        raise ConfigError(f"models.{name}: {exc}") from None


def model_specs(models: dict[str, Any]) -> list[ModelSpec]:
    return [parse_spec(name, table) for name, table in models.items() if isinstance(table, dict)]


def local_dir(path: str, weights_dir: Path, name: str) -> Path | None:
    """Where a model's files are on this machine, or None when they are not here."""
    candidates = [Path(path).expanduser(), weights_dir / name]
    for candidate in candidates:
        if (candidate / "model_index.json").is_file():
            return candidate
    return _hub_cache(path)


def _hub_cache(repo_id: str) -> Path | None:
    if "/" not in repo_id or Path(repo_id).expanduser().exists():
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not in the cache (or huggingface_hub absent): the caller explains
        return None
