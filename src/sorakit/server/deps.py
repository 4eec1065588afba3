"""Request dependencies: the server's services, the caller, and a shaper bound to this request;
and the thread pool of the hot routes."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from . import auth
from .limits import USER_SCOPE_KEY
from .links import link_base
from .services import Services
from .shapes import Shaper


# No I/O in these two: async, so FastAPI does not hop to the thread pool for them.
async def get_services(request: Request) -> Services:
    return request.app.state.services


async def current_user(request: Request, services: Services = Depends(get_services),
                       authorization: str | None = Header(None, include_in_schema=False)) -> dict:
    # Requests with a body were authenticated by the body-limit middleware before it was read.
    found = request.scope.get(USER_SCOPE_KEY)
    if found is not None:
        return found
    # A token verified within the last moment is answered here, on the event loop (a dict
    # lookup); only the others go to the thread pool to be verified and looked up.
    found = auth.cached_user(services.store, services.jwt_key, authorization)
    if found is not None:
        return found
    return await run_in_threadpool(auth.authenticate, services.store, services.jwt_key, authorization)


async def get_shaper(request: Request, services: Services = Depends(get_services)) -> Shaper:
    s = services.settings
    return Shaper(services, link_base(request, s.public_base_url, s.trusted_proxies))


# -- the hot routes' threads -----------------------------------------------------------------------
#: threads that run the hot routes' work at once (polls, task reads, creates: routes_nf.py). Their
#: own small pool: more threads only fight over the GIL (issue 13 measured 1, 2, 4, 8), and a slow
#: route elsewhere (a prompt enhancer taking seconds, an upload) holds the default pool's threads,
#: never these. SORAKIT_HOT_THREADS overrides it.
HOT_THREADS = 2

T = TypeVar("T")
_hot: RunVar[CapacityLimiter] = RunVar("sorakit_hot_limiter")


def hot_threads() -> int:
    return max(int(os.environ.get("SORAKIT_HOT_THREADS") or HOT_THREADS), 1)


def hot_limiter() -> CapacityLimiter:
    """The hot routes' limiter, one per event loop."""
    try:
        return _hot.get()
    except LookupError:
        limiter = CapacityLimiter(hot_threads())
        _hot.set(limiter)
        return limiter


async def run_hot(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a thread of the hot routes' pool (what FastAPI does for a sync route, on
    that pool instead of the default one)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=hot_limiter())
