"""Identifiers shaped like the live service's: a prefix and 26 lowercase base32 characters.

The body is a ULID (48-bit millisecond time + 80 random bits), so ids sort by creation time and
never collide across processes.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, lowercased


def ulid() -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"


def video_id(task_id: str) -> str:
    """The ``/v1/videos`` id of a task: the same body under the official API's prefix, so one
    video has one identity behind both doors."""
    return "video_" + task_id.removeprefix("task_")


def task_id(video_id: str) -> str:
    return "task_" + video_id.removeprefix("video_")
