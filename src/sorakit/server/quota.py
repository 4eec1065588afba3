"""Per-user limits: a cap on unfinished tasks and a rolling 24-hour count, plus the global queue."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..protocol import errors
from ..store import Store, Usage

DAY = 24 * 3600.0


@dataclass(frozen=True)
class Balance:
    daily_limit: int
    used: int
    resets_in: int  # seconds until the oldest task in the window ages out (0 when none)

    @property
    def remaining(self) -> int:
        return max(self.daily_limit - self.used, 0)

    def wire(self) -> dict:
        return {"estimated_num_videos_remaining": self.remaining,
                "estimated_num_purchased_videos_remaining": 0,
                "credit_remaining": self.remaining,
                "rate_limit_reached": self.remaining == 0,
                "access_resets_in_seconds": self.resets_in}


class Quota:
    def __init__(self, store: Store, default_concurrency: int, default_daily: int, max_queue: int) -> None:
        self.store = store
        self.default_concurrency = default_concurrency
        self.default_daily = default_daily
        self.max_queue = max_queue

    def concurrency(self, user: dict) -> int:
        return user["concurrency_limit"] or self.default_concurrency

    def daily_limit(self, user: dict) -> int:
        return user["daily_limit"] or self.default_daily

    def balance(self, user: dict, times: list[float] | None = None, *,
                usage: tuple[int, float | None] | None = None) -> Balance:
        """The daily balance: from the user's creation times of the last 24 hours when given, else
        from ``usage`` (``(used, frees_at)``, as :meth:`Usage.daily` counts it), else read now.
        Reading counts on an index and stops at the limit, so it costs the same whatever the
        user's history."""
        now = self.store.clock()
        limit = self.daily_limit(user)
        if times is not None:
            # The slot that frees first so that used drops below the limit: the (used-limit+1)-th oldest.
            index = max(len(times) - limit, 0)
            usage = (len(times), times[index] if times else None)
        elif usage is None:
            usage = self.store.daily_usage(user["id"], now - DAY, limit)
        used, frees_at = usage
        resets = math.ceil(frees_at + DAY - now) if frees_at is not None else 0
        return Balance(daily_limit=limit, used=used, resets_in=max(resets, 0))

    def check_create(self, user: dict, retry_hint: int, usage: Usage, cost: int = 1) -> None:
        """Raise the 429 or 503 a new task of ``cost`` videos would get now; ``usage`` is read
        inside the transaction that inserts the task, so the answer holds across processes.
        Each count stops at the limit it is checked against."""
        limit = self.daily_limit(user)
        balance = self.balance(user, usage=usage.daily(self.store.clock() - DAY, limit))
        if balance.remaining == 0:
            raise errors.rate_limit_exhausted(balance.daily_limit, max(balance.resets_in, 1))
        if cost > balance.daily_limit:
            raise errors.invalid_request(f"This request makes {cost} videos; your limit is {balance.daily_limit} "
                                         "a day, so it can never be admitted. Ask for fewer.", "nsamples")
        if cost > balance.remaining:
            raise errors.not_enough_quota(cost, balance.remaining, max(balance.resets_in, 1))
        cap = self.concurrency(user)
        if usage.active(bound=cap) >= cap:
            raise errors.too_many_concurrent(usage.active(), retry_hint)  # the message says how many
        if usage.queue_reaches(self.max_queue):
            raise errors.heavy_load()
