"""Configured models: ``[models.NAME]`` tables of ``config.toml``, one diffusers engine each.

    [models.wan]
    family = "wan"                  # wan | ltx | cogvideox
    path = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"   # a local directory or a hub id
    image_path = "..."              # optional: weights of the family's image-to-video pipeline
    dtype = "bfloat16"              # float32 | float16 | bfloat16
    device = "cuda"                 # cuda | cpu | cuda:1 ...
    cpu_offload = false             # model CPU offload (accelerate): less GPU memory, slower
    vae_tiling = false
    vae_slicing = false
    compile = false                 # torch.compile the transformer
    steps = 50                      # default denoising steps (family default when absent)
    guidance = 5.0                  # default guidance scale (family default when absent)
    negative_prompt = "..."         # default negative prompt (family default when absent)
    resolution = {small = [832, 480], large = [1280, 720]}   # landscape (w, h); portrait swaps
    max_frames = 81                 # longest clip in the model's own frames
    fps = 16                        # the model's frame rate (Wan 2.2 TI2V 5B: 24, with max_frames 121)

A hub id is looked for in the models dir (``sorakit models pull NAME`` puts it there) and in the
Hugging Face cache; nothing is downloaded at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError

DTYPES = ("float32", "float16", "bfloat16")
FAMILIES = ("wan", "ltx", "cogvideox")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    path: str
    image_path: str | None = None
    dtype: str = "bfloat16"
    device: str = "cuda"
    cpu_offload: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    compile: bool = False
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    resolution: dict[str, tuple[int, int]] = field(default_factory=dict)
    max_frames: int | None = None
    fps: int | None = None


def _resolution(name: str, raw: Any) -> dict[str, tuple[int, int]]:
    if raw is None:
        return {}
    try:
        found = {size: (int(wh[0]), int(wh[1])) for size, wh in dict(raw).items()}
    except (TypeError, ValueError, IndexError, KeyError):
        raise ConfigError(f"models.{name}.resolution: expected {{small = [w, h], large = [w, h]}}") from None
    unknown = set(found) - {"small", "large"}
    if unknown:
        raise ConfigError(f"models.{name}.resolution: unknown size(s) {', '.join(sorted(unknown))}")
    return found


def parse_spec(name: str, table: dict[str, Any]) -> ModelSpec:
    known = set(ModelSpec.__dataclass_fields__) - {"name"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"models.{name}: unknown key(s) {', '.join(sorted(unknown))}")
    if table.get("family") not in FAMILIES:
        raise ConfigError(f"models.{name}.family must be one of {', '.join(FAMILIES)}")
    if not table.get("path"):
        raise ConfigError(f"models.{name}.path is required (a local directory or a hub id)")
    if table.get("dtype", "bfloat16") not in DTYPES:
        raise ConfigError(f"models.{name}.dtype must be one of {', '.join(DTYPES)}")
    values = {**table, "resolution": _resolution(name, table.get("resolution"))}
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
