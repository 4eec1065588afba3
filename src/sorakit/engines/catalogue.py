"""The model catalogue: presets for ``sorakit models add NAME --preset P``.

Each preset is a ``[models.NAME]`` table with what the model card (or diffusers' documentation of the
pipeline, which the cards point to) says: the diffusers-format hub id, dtype, steps, guidance, frame
rate, sizes, the longest clip and, where the card gives one, its negative prompt. Families (frame
rules, size multiples, the pipelines) are in families.py; what a preset leaves out is the family's
default. The source of every preset's facts is the comment above it and its ``sources``; they are
also written into the config section.

``toml_section`` renders a preset as TOML (no dependency: only strings, numbers, booleans, lists
and inline tables occur); ``append_section`` adds it to a config file without touching the rest.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

#: the negative prompt of the Wan model cards and of diffusers' Wan docs (the English translation of
#: the Chinese one Wan's own code uses)
WAN_NEGATIVE = ("Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, "
                "static, overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, "
                "extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, "
                "fused fingers, still picture, messy background, three legs, many people in the background, "
                "walking backwards")
#: diffusers' LTX-Video docs (https://huggingface.co/docs/diffusers/api/pipelines/ltx_video)
LTX_NEGATIVE = "worst quality, inconsistent motion, blurry, jittery, distorted"
#: diffusers' LTX-2 docs (https://huggingface.co/docs/diffusers/api/pipelines/ltx2)
LTX2_NEGATIVE = ("shaky, glitchy, low quality, worst quality, deformed, distorted, disfigured, motion smear, "
                 "motion artifacts, fused fingers, bad anatomy, weird hand, ugly, transition, static.")


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    sources: tuple[str, ...]
    table: dict[str, Any]
    note: str = ""

    @property
    def family(self) -> str:
        return self.table["family"]


PRESETS: dict[str, Preset] = {}


def _preset(name: str, title: str, sources: tuple[str, ...], note: str = "", **table: Any) -> None:
    PRESETS[name] = Preset(name, title, sources, table, note)


# Wan 2.1 T2V 1.3B: 480P only (the 1.3B model is trained for 832x480), 81 frames at 16 fps, 50 steps,
# guidance 5.0, the card's negative prompt; no image-to-video model at this size.
# https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B-Diffusers
# https://huggingface.co/docs/diffusers/api/pipelines/wan (WanPipeline: 480x832, 81 frames, 5.0, fps=16)
_preset("wan2.1-t2v-1.3b", "Wan 2.1 text-to-video 1.3B (480P)",
        ("https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
         "https://huggingface.co/docs/diffusers/api/pipelines/wan"),
        family="wan", path="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", dtype="bfloat16", steps=50, guidance=5.0, fps=16,
        resolution={"small": [832, 480], "large": [832, 480]}, max_frames=81, negative_prompt=WAN_NEGATIVE)

# Wan 2.1 T2V 14B: 480P and 720P (1280x720), 81 frames at 16 fps, 50 steps, guidance 5.0; the 14B
# image-to-video weights are a separate checkpoint (720P here; a 480P one exists too).
# https://huggingface.co/Wan-AI/Wan2.1-T2V-14B-Diffusers
# https://huggingface.co/Wan-AI/Wan2.1-I2V-14B-720P-Diffusers
# https://huggingface.co/docs/diffusers/api/pipelines/wan (720x1280, 81 frames, guidance 5.0, fps=16)
_preset("wan2.1-t2v-14b", "Wan 2.1 text-to-video 14B (480P/720P), image-to-video 14B 720P",
        ("https://huggingface.co/Wan-AI/Wan2.1-T2V-14B-Diffusers",
         "https://huggingface.co/Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
         "https://huggingface.co/docs/diffusers/api/pipelines/wan"),
        note="the cards' scheduler shift is 3.0 for 480P and 5.0 for 720P; the checkpoint's scheduler config applies",
        family="wan", path="Wan-AI/Wan2.1-T2V-14B-Diffusers", image_path="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
        dtype="bfloat16", steps=50, guidance=5.0, fps=16, resolution={"small": [832, 480], "large": [1280, 720]},
        max_frames=81, negative_prompt=WAN_NEGATIVE)

# Wan 2.2 TI2V 5B: one checkpoint for text- and image-to-video, 720P as 1280x704 (or 704x1280),
# 121 frames at 24 fps (5 s), 50 steps, guidance 5.0, Wan's negative prompt.
# https://huggingface.co/Wan-AI/Wan2.2-TI2V-5B-Diffusers (diffusers example: height=704, width=1280,
# num_frames=121, num_inference_steps=50, guidance_scale=5.0, export fps=24)
# https://github.com/Wan-Video/Wan2.2 (ti2v-5B: 720P, --size 1280*704, 24 fps)
_preset("wan2.2-ti2v-5b", "Wan 2.2 text+image-to-video 5B (720P, 24 fps)",
        ("https://huggingface.co/Wan-AI/Wan2.2-TI2V-5B-Diffusers", "https://github.com/Wan-Video/Wan2.2"),
        family="wan22-ti2v", path="Wan-AI/Wan2.2-TI2V-5B-Diffusers", dtype="bfloat16", steps=50, guidance=5.0,
        fps=24, resolution={"small": [1280, 704], "large": [1280, 704]}, max_frames=121,
        negative_prompt=WAN_NEGATIVE)

# LTX-Video 0.9.7 dev (13B, diffusers layout): the docs' settings for it: 30 steps, guidance 5.0 (the
# distilled variants take 1.0), 24 fps, 768x512 (the LTX examples) and 1152x768 (the 0.9.7 example's
# target), frames 8k+1; the docs' negative prompt. Text and image to video share the weights.
# https://huggingface.co/Lightricks/LTX-Video-0.9.7-dev
# https://huggingface.co/docs/diffusers/api/pipelines/ltx_video
_preset("ltx-video-0.9.7-dev", "LTX-Video 0.9.7 dev 13B",
        ("https://huggingface.co/Lightricks/LTX-Video-0.9.7-dev",
         "https://huggingface.co/docs/diffusers/api/pipelines/ltx_video"),
        note="the docs also set decode_timestep=0.05, decode_noise_scale=0.025 (timestep-aware VAE, 0.9.1+); "
             "sorakit's ltx family passes the pipeline's defaults",
        family="ltx", path="Lightricks/LTX-Video-0.9.7-dev", dtype="bfloat16", steps=30, guidance=5.0, fps=24,
        resolution={"small": [768, 512], "large": [1152, 768]}, negative_prompt=LTX_NEGATIVE)

# LTX-2 (19B, video with sound): 768x512 in the docs' examples, 720P (1280x704: sides by 32) as the
# card's workflows' default, 121 frames at 24 fps in the examples, frames 8k+1; the docs' full
# generation at the target size: 40 steps, guidance 4.0, and their negative prompt. Text and image
# to video share the weights. Two-stage generation (x2 latent upsampler, Lightricks/LTX-2's
# ``latent_upsampler``) is the model option upsampler_path.
# https://huggingface.co/Lightricks/LTX-2
# https://huggingface.co/docs/diffusers/api/pipelines/ltx2
_preset("ltx-2", "LTX-2 19B, video with synchronised sound",
        ("https://huggingface.co/Lightricks/LTX-2", "https://huggingface.co/docs/diffusers/api/pipelines/ltx2"),
        note="for the two-stage recipe add upsampler_path = \"Lightricks/LTX-2\"",
        family="ltx2", path="Lightricks/LTX-2", dtype="bfloat16", steps=40, guidance=4.0, fps=24,
        resolution={"small": [768, 512], "large": [1280, 704]}, negative_prompt=LTX2_NEGATIVE)

# HunyuanVideo 1.5 (8.3B), 480p: 848x480 (the 16:9 bucket of the 480p checkpoints), 121 frames at
# 24 fps, 50 steps; guidance comes from the checkpoint's guider (ClassifierFreeGuidance, 6.0), so the
# preset sets none. Image-to-video is a separate checkpoint.
# https://huggingface.co/hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v
# https://huggingface.co/docs/diffusers/api/pipelines/hunyuan_video15
# https://github.com/Tencent-Hunyuan/HunyuanVideo-1.5
_preset("hunyuanvideo-1.5", "HunyuanVideo 1.5 8.3B, 480p (text and image to video)",
        ("https://huggingface.co/hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",
         "https://huggingface.co/docs/diffusers/api/pipelines/hunyuan_video15",
         "https://github.com/Tencent-Hunyuan/HunyuanVideo-1.5"),
        note="diffusers recommends a padding-aware attention backend (flash_varlen, _flash_3_hub, sage_hub) on a GPU",
        family="hunyuanvideo15", path="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",
        image_path="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v", dtype="bfloat16", steps=50,
        fps=24, resolution={"small": [848, 480], "large": [848, 480]}, max_frames=121)

# HunyuanVideo 1.5, 720p checkpoints: 1280x720, otherwise as the 480p preset.
# https://huggingface.co/hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_t2v
# https://huggingface.co/docs/diffusers/api/pipelines/hunyuan_video15
_preset("hunyuanvideo-1.5-720p", "HunyuanVideo 1.5 8.3B, 720p (text and image to video)",
        ("https://huggingface.co/hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_t2v",
         "https://huggingface.co/docs/diffusers/api/pipelines/hunyuan_video15",
         "https://github.com/Tencent-Hunyuan/HunyuanVideo-1.5"),
        note="diffusers recommends a padding-aware attention backend (flash_varlen, _flash_3_hub, sage_hub) on a GPU",
        family="hunyuanvideo15", path="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_t2v",
        image_path="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_i2v", dtype="bfloat16", steps=50,
        fps=24, resolution={"small": [1280, 720], "large": [1280, 720]}, max_frames=121)

# CogVideoX 5B: BF16 (the card: "does not support FP16"), 720x480 only, 6 s at 8 fps = 49 frames,
# 50 steps, guidance 6; the card gives no negative prompt. Image-to-video: CogVideoX-5b-I2V (720x480).
# https://huggingface.co/THUDM/CogVideoX-5b
# https://huggingface.co/THUDM/CogVideoX-5b-I2V
_preset("cogvideox-5b", "CogVideoX 5B (720x480, 8 fps), image-to-video 5B",
        ("https://huggingface.co/THUDM/CogVideoX-5b", "https://huggingface.co/THUDM/CogVideoX-5b-I2V"),
        family="cogvideox", path="THUDM/CogVideoX-5b", image_path="THUDM/CogVideoX-5b-I2V", dtype="bfloat16",
        steps=50, guidance=6.0, fps=8, resolution={"small": [720, 480], "large": [720, 480]}, max_frames=49)


# -- TOML --------------------------------------------------------------------------------------------
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
#: the first comment line of a section ``models add`` wrote (so ``--force`` removes it with the section)
MARKER = "# sorakit models add "


def toml_key(key: str) -> str:
    return key if _BARE.match(key) else json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no TOML form here")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"{type(value).__name__} has no TOML form here")


def toml_section(name: str, preset: Preset, overrides: dict[str, Any] | None = None) -> str:
    """``[models.NAME]`` with the preset's table (and ``overrides``), its title and sources as comments."""
    table = {**preset.table, **(overrides or {})}
    lines = [f"{MARKER}{name} --preset {preset.name}: {preset.title}"]
    lines += [f"# source: {url}" for url in preset.sources]
    if preset.note:
        lines.append(f"# note: {preset.note}")
    lines.append(f"[models.{toml_key(name)}]")
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def _header(line: str) -> tuple[str, ...] | None:
    """The dotted key of a ``[table]`` header line, or None (``[[arrays]]`` count as headers too)."""
    found = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
    if not found:
        return None
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', found.group(1))
    return tuple(next(p for p in part if p) if any(part) else "" for part in parts)


def remove_section(text: str, name: str) -> str | None:
    """``text`` without the ``[models.NAME]`` table (and its sub-tables, and the comment block
    ``models add`` wrote above it); None when the model is not defined by such a header."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _header(line) == ("models", name)), None)
    if start is None:
        return None
    end = start + 1
    while end < len(lines):
        key = _header(lines[end])
        if key is not None and key[:2] != ("models", name):
            break
        end += 1
    if end < len(lines):  # the comments and blank lines right above the next header belong to it
        while end - 1 > start and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1
    top = start
    while top > 0 and lines[top - 1].lstrip().startswith("#"):
        top -= 1
    if not lines[top].startswith(MARKER):  # someone else's comments: keep them
        top = start
    return "".join(lines[:top] + lines[end:])


def append_section(text: str, section: str) -> str:
    """``text`` (a whole config file, possibly empty) with ``section`` appended after a blank line."""
    if not text.strip():
        return section
    return text.rstrip("\n") + "\n\n" + section
