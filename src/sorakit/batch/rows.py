"""Batch input files: one video a row.

Three formats, chosen by the file's extension:

- plain text (any other extension): a prompt a line; blank lines and ``#`` comments are skipped;
- CSV (``.csv``): a header row naming the columns, ``prompt`` required;
- JSON Lines (``.jsonl``, ``.ndjson``): one JSON object a line (blank and ``#`` lines skipped).

CSV and JSONL rows may carry ``prompt``, ``orientation``, ``size``, ``n_frames`` or ``seconds``,
``model``, ``style_id``, ``seed`` and ``output`` (an output template for that row). Rows are
numbered from 1 in file order, counting only rows that make a video, so a comment added later
does not renumber anything. Every error names the file's line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FPS = 30
ORIENTATIONS = ("portrait", "landscape", "square")
SIZES = ("small", "large")
COLUMNS = ("prompt", "orientation", "size", "n_frames", "seconds", "model", "style_id", "seed", "output")
#: request fields a row can set (``seconds`` becomes ``n_frames``; ``output`` is not sent)
FIELDS = ("orientation", "size", "n_frames", "model", "style_id", "seed")


class RowError(ValueError):
    """A batch file row that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Row:
    index: int  # 1-based among the file's video rows
    line: int  # line number in the file, for messages
    prompt: str
    fields: dict[str, Any] = field(default_factory=dict)  # only what the row set
    output: str | None = None

    @property
    def content_hash(self) -> str:
        """What identifies the row's content across runs (not its position)."""
        data = {"prompt": self.prompt, "fields": self.fields, "output": self.output}
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def load_rows(path: str | Path, fmt: str | None = None) -> list[Row]:
    """Read and check every row of a batch file (``fmt``: ``text``, ``csv``, ``jsonl``; default by suffix)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise RowError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RowError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return parse_rows(text, fmt or format_of(path), name=str(path))


def format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix, "text")


def parse_rows(text: str, fmt: str = "text", name: str = "<batch>") -> list[Row]:
    parsers = {"text": _text_rows, "csv": _csv_rows, "jsonl": _jsonl_rows}
    if fmt not in parsers:
        raise RowError(f"unknown batch format {fmt!r}; use text, csv or jsonl")
    raw = list(parsers[fmt](text, name))
    rows = [make_row(i, line, values, name) for i, (line, values) in enumerate(raw, start=1)]
    if not rows:
        raise RowError(f"{name}: no prompts found")
    return rows


def _text_rows(text: str, name: str):
    for line, content in enumerate(text.splitlines(), start=1):
        stripped = content.strip()
        if stripped and not stripped.startswith("#"):
            yield line, {"prompt": stripped}


def _jsonl_rows(text: str, name: str):
    for line, content in enumerate(text.splitlines(), start=1):
        stripped = content.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise RowError(f"{name}, line {line}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise RowError(f"{name}, line {line}: expected a JSON object like "
                           f'{{"prompt": "..."}}, got {type(value).__name__}')
        yield line, value


def _csv_rows(text: str, name: str):
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if header is None:
            if record[0].lstrip().startswith("#"):
                continue
            header = [cell.strip().lower() for cell in record]
            if "prompt" not in header:
                raise RowError(f"{name}, line {line}: the CSV header must name a 'prompt' column "
                               f"(got {', '.join(header)})")
            continue
        if record[0].lstrip().startswith("#"):
            continue
        if len(record) > len(header):
            raise RowError(f"{name}, line {line}: {len(record)} cells but the header names {len(header)}")
        yield line, {k: v for k, v in zip(header, record) if v.strip() != ""}


def make_row(index: int, line: int, values: dict[str, Any], name: str = "<batch>") -> Row:
    """Check one row's values and normalise them (``seconds`` -> ``n_frames``)."""
    where = f"{name}, line {line} (row {index})"
    unknown = sorted(set(values) - set(COLUMNS))
    if unknown:
        raise RowError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    prompt = values.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RowError(f"{where}: a non-empty 'prompt' is required")
    fields: dict[str, Any] = {}
    for key in ("orientation", "size", "model", "style_id"):
        if values.get(key) is not None:
            fields[key] = _text(values[key], key, where)
    _choice(fields, "orientation", ORIENTATIONS, where)
    _choice(fields, "size", SIZES, where)
    frames = frames_from(values.get("n_frames"), values.get("seconds"), where)
    if frames is not None:
        fields["n_frames"] = frames
    if values.get("seed") is not None:
        fields["seed"] = _integer(values["seed"], "seed", where, minimum=0)
    output = _text(values["output"], "output", where) if values.get("output") is not None else None
    return Row(index=index, line=line, prompt=prompt.strip(), fields=fields, output=output)


def _text(value: Any, key: str, where: str) -> str:
    if isinstance(value, (dict, list, bool)) or value is None:
        raise RowError(f"{where}: {key} must be text, got {json.dumps(value)}")
    text = str(value).strip()
    if not text:
        raise RowError(f"{where}: {key} is empty")
    return text


def _choice(fields: dict[str, Any], key: str, allowed: tuple[str, ...], where: str) -> None:
    if key in fields:
        fields[key] = fields[key].lower()
        if fields[key] not in allowed:
            raise RowError(f"{where}: unknown {key} {fields[key]!r}; use one of {', '.join(allowed)}")


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool):
        raise RowError(f"{where}: {key} must be a number, got {json.dumps(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RowError(f"{where}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise RowError(f"{where}: {key} must be a finite number, got {value!r}")
    return number


def _integer(value: Any, key: str, where: str, minimum: int = 1) -> int:
    number = _number(value, key, where)
    if number != int(number) or number < minimum:
        raise RowError(f"{where}: {key} must be a whole number of at least {minimum}, got {value!r}")
    return int(number)


def frames_from(n_frames: Any, seconds: Any, where: str = "") -> int | None:
    """``n_frames`` from either field (30 fps); both given must agree."""
    frames = _integer(n_frames, "n_frames", where) if n_frames is not None else None
    if seconds is not None:
        secs = _number(seconds, "seconds", where)
        if secs <= 0:
            raise RowError(f"{where}: seconds must be more than 0, got {seconds!r}")
        from_seconds = max(1, round(secs * FPS))
        if frames is not None and frames != from_seconds:
            raise RowError(f"{where}: n_frames {frames} and seconds {seconds} disagree "
                           f"({seconds} s is {from_seconds} frames at {FPS} fps); give one")
        frames = from_seconds
    return frames
