"""The I/O vocabulary between the client's logic and its two drivers (sync and async).

The logic (``core.py``) is written once, as generators that ``yield`` a step and receive its
result; ``SoraClient`` and ``AsyncSoraClient`` only carry steps out. A transport failure is
thrown back into the generator as a :class:`~sorakit.client.errors.TransportError`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Send:
    """One API request. ``headers`` carry the credentials: the driver adds none of its own."""

    method: str
    url: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, else text


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Fetch:
    """One download attempt: GET ``url`` (no credentials, redirects followed) into ``part``.

    With ``offset`` > 0 a ``Range`` header asks for the rest. The driver appends on a 206 whose
    range starts at ``offset``, starts the file over on a 200, and writes nothing otherwise.
    """

    url: str
    part: Path
    offset: int = 0
    on_bytes: Callable[[int], None] | None = None
    #: the ETag the part file was started from: a changed file answers 200 and starts over
    if_range: str | None = None

    def headers(self) -> dict[str, str]:
        if not self.offset:
            return {}
        found = {"Range": f"bytes={self.offset}-"}
        if self.if_range:
            found["If-Range"] = self.if_range
        return found


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: Mapping[str, str]
    size: int  # size of the part file afterwards
    error: Exception | None = None  # a transport error after the headers arrived
    body: bytes = b""  # the start of an error answer's body


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded, jittered exponential backoff; ``Retry-After`` wins when the server sends one.

    ``RetryPolicy(wait=False)`` keeps the attempt counts but never sleeps (tests).
    """

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    total: float = 300.0
    wait: bool = True

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if not self.wait:
            return 0.0
        if retry_after is not None:
            return min(retry_after, self.cap * 4)
        backoff = min(self.cap, self.base * 2 ** (attempt - 1))
        return backoff * random.uniform(0.5, 1.0)
