"""Output names and sidecars.

Templates may use ``{task_id}``, ``{gen_id}``, ``{prompt_slug}``, ``{date}`` and ``{index}``;
each value is made safe for a file name before it is put in, so a prompt can never add a
directory or a dot-dot. The default is the seed's ``sora_{task_id}.mp4``.
"""

from __future__ import annotations

import json
import os
import re
import string
import time
import unicodedata
from pathlib import Path
from typing import Any

DEFAULT_TEMPLATE = "sora_{task_id}.mp4"
FIELDS = ("task_id", "gen_id", "prompt_slug", "date", "index")


class TemplateError(ValueError):
    pass


def slug(text: str, limit: int = 60) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^A-Za-z0-9]+", "-", ascii_text).strip("-").lower()
    return words[:limit].rstrip("-") or "video"


def _safe(value: Any) -> str:
    text = re.sub(r"[^\w.\-]+", "_", str(value)).strip("._") or "_"
    return text[:120]


def check_template(template: str) -> None:
    """Refuse a template with fields other than the bare names above (before any video is made)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"bad output template {template!r}: {exc}; use "
                            f"{', '.join('{' + f + '}' for f in FIELDS)}") from None
    for _text, field, spec, conversion in parsed:
        if field is not None and (field not in FIELDS or conversion):
            raise TemplateError(f"bad output template {template!r}: unknown field {{{field}}}; use "
                                f"{', '.join('{' + f + '}' for f in FIELDS)}")


def render(template: str, *, task_id: str, gen_id: str | None = None, prompt: str = "",
           index: int = 0, when: float | None = None) -> Path:
    check_template(template)
    values = {"task_id": _safe(task_id), "gen_id": _safe(gen_id or "nogen"), "prompt_slug": slug(prompt),
              "date": time.strftime("%Y%m%d", time.localtime(when)), "index": f"{index:03d}"}
    try:
        name = template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise TemplateError(f"bad output template {template!r}: use {', '.join('{'+f+'}' for f in FIELDS)}"
                            f" ({exc})") from None
    path = Path(name)
    if not path.suffix:
        path = path.with_suffix(".mp4")
    return path


def sidecar_path(video: Path) -> Path:
    return video.with_name(video.name + ".json")


def write_sidecar(video: Path, data: dict[str, Any]) -> Path:
    """Write ``<video>.json`` whole (temp file, then rename)."""
    path = sidecar_path(video)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
