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
    """How long to keep trying through an outage, and how often (see ``outage.py``).

    Transient failures are retried with jittered exponential backoff (``base`` doubling up to
    ``cap``; a ``Retry-After`` wins) until the outage has lasted ``max_outage`` seconds: bounded by
    time, not by a count, so a server restart is waited out. ``max_outage=0`` fails at once;
    ``attempts``, when set, is an extra bound on the tries. ``RetryPolicy(wait=False)`` never
    sleeps (tests) but counts the pauses it skipped as time gone by, so it still gives up.
    """

    max_outage: float = 300.0
    base: float = 0.5
    cap: float = 10.0
    attempts: int | None = None
    wait: bool = True

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """The pause after failed attempt ``attempt`` (slept only with ``wait``)."""
        if retry_after is not None:
            # floored: a "Retry-After: 0" must not turn a long outage into a busy loop
            return max(min(retry_after, self.cap * 4), self.base)
        backoff = min(self.cap, self.base * 2 ** min(attempt - 1, 30))
        return backoff * random.uniform(0.5, 1.0)
