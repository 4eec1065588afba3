"""Bounds on request JSON: how deep, how long, how many, and only text a database can store.

The protocol asks us to accept unknown request keys and store them, so every value is walked,
unknown ones included, before anything else looks at it. A violation names the field by its path
(``metadata.tags[3]``) and never echoes the value back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 16  # objects and lists inside each other
MAX_ITEMS = 100  # entries of one list, keys of one object
MAX_KEY_CHARS = 200
MAX_STRING_CHARS = 20_000  # any one string; known fields have tighter limits of their own
MAX_EXTRA_BYTES = 16 * 1024  # all unknown top-level keys together, as stored JSON


class BoundsError(ValueError):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Limits:
    depth: int = MAX_DEPTH
    items: int = MAX_ITEMS
    key_chars: int = MAX_KEY_CHARS
    string_chars: int = MAX_STRING_CHARS
    #: paths allowed longer strings than ``string_chars`` (a data URL), with their own limit
    long_strings: tuple[tuple[str, int], ...] = ()


def safe_name(name: Any, limit: int = 40) -> str:
    """A field name fit to send back: cut short, lone surrogates escaped."""
    text = str(name)
    text = text if len(text) <= limit else text[:limit] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{safe_name(key)}" if path else safe_name(key)


def _check_text(text: str, path: str, limit: int, what: str) -> None:
    if len(text) > limit:
        raise BoundsError(f"{path or 'value'}: {what} longer than {limit} characters.", path or None)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BoundsError(f"{path or 'value'}: {what} is not valid Unicode (a lone surrogate).",
                          path or None) from None
    if "\x00" in text:  # no text means one, and PostgreSQL cannot store it
        raise BoundsError(f"{path or 'value'}: {what} contains a NUL character.", path or None)


def check(value: Any, limits: Limits = Limits()) -> None:
    """Raise :class:`BoundsError` for the first bound ``value`` breaks (walked without recursion)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, path, dict(limits.long_strings).get(path, limits.string_chars), "text")
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth >= limits.depth:
            raise BoundsError(f"{path or 'body'}: nested more than {limits.depth} levels deep.", path or None)
        if len(item) > limits.items:
            raise BoundsError(f"{path or 'body'}: more than {limits.items} entries.", path or None)
        if isinstance(item, dict):
            for key, child in item.items():
                child_path = _join(path, key)
                _check_text(key, child_path, limits.key_chars, "key")
                stack.append((child, child_path, depth + 1))
        else:
            stack.extend((child, _join(path, i), depth + 1) for i, child in enumerate(item))


def check_extra(extra: dict[str, Any] | None, limit: int = MAX_EXTRA_BYTES) -> None:
    """Unknown keys are stored with the task: together they must fit in ``limit`` bytes."""
    if not extra:
        return
    sizes = {key: len(json.dumps(value, ensure_ascii=False).encode()) for key, value in extra.items()}
    if sum(sizes.values()) > limit:
        biggest = max(sizes, key=sizes.get)
        raise BoundsError(f"Unknown fields may take {limit // 1024} KB together; "
                          f"{safe_name(biggest)} alone takes {sizes[biggest]} bytes.", safe_name(biggest))
