"""Waiting out a server that stopped answering: bounded by time, and said out loud.

An outage is one request's run of transient failures (no connection, a cut answer, a 5xx, a 429).
It is bounded by ``RetryPolicy.max_outage`` seconds, not by a count of attempts, so a server
restart in the middle of an overnight batch is waited out instead of failing the batch. Every
retry loop of the client (GETs, create, polls, downloads, the batch runner) keeps an
:class:`Outage`; each failed attempt is reported as an :class:`OutageEvent`, and so is the first
good answer after one. An error that outlasts ``max_outage`` is raised with ``outage`` set to the
seconds waited and a message that ends by saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from . import errors
from .steps import RetryPolicy


@dataclass(frozen=True)
class OutageEvent:
    """``state`` is ``waiting`` (an attempt failed; another follows) or ``back`` (the server answered)."""

    state: str
    attempt: int
    elapsed: float  # seconds since the outage began
    remaining: float = 0.0  # seconds of trying left (``waiting``)
    error: errors.SoraError | None = None

    @property
    def message(self) -> str:
        if self.state == "back":
            return f"server is back after {clock(self.elapsed)}"
        return (f"server {_described(self.error)}, retrying for up to {clock(self.remaining)} "
                f"(attempt {self.attempt})...")


def condition(exc: errors.SoraError | None) -> str:
    """What is wrong with the server: ``unreachable``, ``failing`` (5xx) or ``busy`` (429)."""
    if isinstance(exc, errors.RateLimitError):
        return "busy"
    return "failing" if isinstance(exc, errors.APIError) else "unreachable"


def _described(exc: errors.SoraError | None) -> str:
    status = f" (HTTP {exc.status})" if isinstance(exc, errors.APIError) else ""
    return condition(exc) + status


def clock(seconds: float) -> str:
    """``45s``, ``4m50s``, ``1h05m``: short enough for a progress line."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class Outage:
    """One request's transient failures, from the first until it gives up or gets an answer."""

    def __init__(self, policy: RetryPolicy, report: Callable[[OutageEvent], None] | None = None) -> None:
        self.policy = policy
        self.report = report
        self.started: float | None = None  # at the first failure
        self.attempts = 0
        self.waited = 0.0

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        # Pauses skipped by RetryPolicy(wait=False) count as time gone by, so tests still give up.
        return max(time.monotonic() - self.started, self.waited)

    def pause(self, exc: errors.SoraError) -> float:
        """Seconds to sleep before the next attempt; raises ``exc`` once the outage is too long."""
        if self.started is None:
            self.started = time.monotonic()
        self.attempts += 1
        remaining = self.policy.max_outage - self.elapsed
        out_of_tries = self.policy.attempts is not None and self.attempts >= self.policy.attempts
        if remaining <= 0 or out_of_tries:
            raise gave_up(exc, self.elapsed, self.attempts, self.policy.max_outage)
        # The last pause ends at the deadline, so the final attempt comes at max_outage, not past it.
        backoff = min(self.policy.backoff(self.attempts, getattr(exc, "retry_after", None)), remaining)
        if self.report:
            self.report(OutageEvent("waiting", self.attempts, self.elapsed, remaining, exc))
        self.waited += backoff
        return backoff if self.policy.wait else 0.0


OUTLASTED = {"unreachable": "was unreachable", "failing": "kept failing", "busy": "stayed busy"}


def gave_up(exc: errors.SoraError, elapsed: float, attempts: int, max_outage: float) -> errors.SoraError:
    """``exc``, its message ending with how long the server was out (its class, so its exit code, kept)."""
    if max_outage <= 0:
        said = "not retried (the maximum outage is 0 s)"
    else:
        tries = f"{attempts} attempt" + ("s" if attempts != 1 else "")
        said = f"the server {OUTLASTED[condition(exc)]} for {elapsed:.{0 if elapsed >= 10 else 1}f} s ({tries})"
    exc.outage = elapsed
    exc.message = f"{exc.message}; {said}"
    exc.args = (exc.message,)
    return exc
