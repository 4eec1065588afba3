"""Request bodies: bounded while they are read, and never read before the caller is authenticated.

A pure ASGI middleware, so it runs before FastAPI parses anything:

1. A declared ``Content-Length`` over the route's limit is refused with 413 at once.
2. On token-protected paths a request with a body is authenticated first (401 without reading a
   byte of it); the user found is kept in the request scope, so the route does not look again.
3. The body is counted as it arrives; past the limit the read fails with 413, whatever
   ``Content-Length`` claimed (or with chunked encoding, where it claims nothing).

Limits per route: ``max_body_bytes`` for JSON, ``upload_max_bytes`` plus room for the multipart
envelope on routes that take a file.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..protocol.errors import ApiError
from . import auth
from .handlers import database_errors, database_unavailable, respond
from .services import Services

PROTECTED_PREFIXES = ("/backend/", "/v1/")
UPLOAD_ROUTES = {("POST", "/backend/uploads"), ("POST", "/v1/videos"), ("POST", "/v1/videos/edits")}
MULTIPART_ROOM = 64 * 1024  # boundaries, part headers and small form fields around the file
USER_SCOPE_KEY = "sorakit.user"  # its own scope key: scope["state"] may be shared by a server


class BodyTooLarge(ApiError, HTTPException):
    """Raised from ``receive`` once the body passes its limit.

    An ``HTTPException`` so FastAPI's body reader lets it through untouched (it turns any other
    error into a generic 400); an ``ApiError`` first, so the envelope handler answers it.
    """

    def __init__(self, limit: int) -> None:
        message = f"The request body is larger than this endpoint accepts ({_size(limit)})."
        HTTPException.__init__(self, 413, message)
        # ApiError's own __init__ would call super().__init__, which is HTTPException's here.
        self.status, self.code, self.message = 413, "request_too_large", message
        self.type, self.param, self.headers = "invalid_request_error", None, {}


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{n // 1024} KB"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _declared_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # the server rejects a malformed length before we are called


def _has_body(scope: Scope) -> bool:
    length = _declared_length(scope)
    return (length is not None and length > 0) or _header(scope, b"transfer-encoding") is not None


class BodyLimits:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    def limit_for(self, method: str, path: str, content_type: str | None) -> int:
        s = self.services.settings
        multipart = (content_type or "").lower().startswith("multipart/")
        if multipart and (method, path.rstrip("/")) in UPLOAD_ROUTES:
            return s.upload_max_bytes + MULTIPART_ROOM
        return s.max_body_bytes  # JSON needs no room for a file, whatever the route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"], _header(scope, b"content-type"))
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _answer(scope, receive, send, BodyTooLarge(limit))
            return
        if scope["path"].startswith(PROTECTED_PREFIXES):
            try:
                user = await run_in_threadpool(auth.authenticate, self.services.store,
                                               self.services.jwt_key, _header(scope, b"authorization"))
            except ApiError as exc:
                await _answer(scope, receive, send, exc)
                return
            except DATABASE_ERRORS as exc:  # outside the app: its handlers do not see this one
                await _answer(scope, receive, send, database_unavailable(exc, scope["method"], scope["path"]))
                return
            scope[USER_SCOPE_KEY] = user
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received, started = 0, False

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except BodyTooLarge as exc:  # read outside a route (a handler would have answered it)
            if not started:
                await _answer(scope, receive, send, exc)


DATABASE_ERRORS = database_errors()


async def _answer(scope: Scope, receive: Receive, send: Send, exc: ApiError) -> None:
    # The unread body is left unread: the server closes the connection after this answer.
    await respond(exc)(scope, receive, send)
