"""Request dependencies: the server's services, the caller, and a shaper bound to this request."""

from __future__ import annotations

from fastapi import Depends, Header, Request

from . import auth
from .limits import USER_SCOPE_KEY
from .links import link_base
from .services import Services
from .shapes import Shaper


# No I/O in these two: async, so FastAPI does not hop to the thread pool for them.
async def get_services(request: Request) -> Services:
    return request.app.state.services


def current_user(request: Request, services: Services = Depends(get_services),
                 authorization: str | None = Header(None, include_in_schema=False)) -> dict:
    # Requests with a body were authenticated by the body-limit middleware before it was read.
    found = request.scope.get(USER_SCOPE_KEY)
    return found if found is not None else auth.authenticate(services.store, services.jwt_key, authorization)


async def get_shaper(request: Request, services: Services = Depends(get_services)) -> Shaper:
    s = services.settings
    return Shaper(services, link_base(request, s.public_base_url, s.trusted_proxies))
