"""Every error leaves in the envelope of PROTOCOL section 6: FastAPI's own ones included."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..media.storage import StorageError
from ..protocol import errors
from ..protocol.bounds import safe_name
from ..protocol.errors import ApiError
from ..store.db import database_errors, first_line

log = logging.getLogger("sorakit.server")


def respond(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.envelope(), status_code=exc.status, headers=exc.headers)


def _validation_message(err: dict) -> tuple[str, str | None]:
    # loc may hold the client's own dict keys: cut short and made encodable, never echoed whole
    loc = [safe_name(p) for p in err.get("loc", ()) if p not in ("body", "query", "header", "path")]
    param = ".".join(loc) or None
    if err.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    if err.get("type") == "model_attributes_type":
        return "The request body must be a JSON object.", None
    if err.get("type") == "missing":
        return f"{param} is required.", param
    return f"{param or 'request'}: {err.get('msg', 'invalid value')}.", param


async def _on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    message, param = _validation_message(first)
    return respond(errors.invalid_request(message, param))


def _allowed_methods(request: Request) -> str:
    """Every method some route serves on this URL. Starlette's own ``Allow`` names only the first
    route whose path matched, but one URL may be several routes (a draft's GET and DELETE)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        return respond(errors.not_found("URL"))
    if exc.status_code == 405:
        # RFC 9110 requires Allow on 405; fall back to Starlette's when no route matched here.
        allow = _allowed_methods(request) or (exc.headers or {}).get("Allow")
        return respond(ApiError(405, "method_not_allowed", "This method is not allowed on this URL.",
                                headers={"Allow": allow} if allow else None))
    code = "invalid_request" if 400 <= exc.status_code < 500 else "server_error"
    return respond(ApiError(exc.status_code, code, str(exc.detail),
                            type="invalid_request_error" if code == "invalid_request" else "server_error"))


async def _on_api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return respond(exc)


async def _on_storage(request: Request, exc: StorageError) -> JSONResponse:
    """The media storage (a bucket) failed the request: the server's trouble, said in words."""
    log.error("media storage error on %s %s: %s", request.method, request.url.path, exc)
    return respond(ApiError(503, "storage_unavailable", f"The media storage is not available now: {exc.reason}. "
                            "Try again later.", type="server_error", headers={"Retry-After": "5"}))


def database_unavailable(exc: Exception, method: str, path: str) -> ApiError:
    """The database went away (down, restarting, unreachable, or SQLite locked past its timeout):
    a 503 to retry, not a 500; the pool reconnects once it is back."""
    log.error("database error on %s %s: %s", method, path, first_line(exc))
    return ApiError(503, "database_unavailable", "The database is not available now. Try again later.",
                    type="server_error", headers={"Retry-After": "5"})


async def _on_database(request: Request, exc: Exception) -> JSONResponse:
    return respond(database_unavailable(exc, request.method, request.url.path))


async def _on_unstorable(request: Request, exc: Exception) -> JSONResponse:
    """A value the database refuses to store or compare (PostgreSQL: a NUL character in text, a
    number out of its column's range): the request's mistake, a 400, however it got that far."""
    log.info("database refused a value on %s %s: %s", request.method, request.url.path, first_line(exc))
    return respond(errors.invalid_request("The request holds a value that cannot be stored or looked up "
                                          "(such as a NUL character, or a number out of range).", None))


def unstorable_errors() -> tuple[type[Exception], ...]:
    from sqlalchemy.exc import DataError

    found: list[type[Exception]] = [DataError]
    try:
        import psycopg

        found.append(psycopg.DataError)
    except ImportError:
        pass
    return tuple(found)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return respond(errors.server_error())


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(StorageError, _on_storage)
    for kind in database_errors():
        app.add_exception_handler(kind, _on_database)
    for kind in unstorable_errors():
        app.add_exception_handler(kind, _on_unstorable)
    app.add_exception_handler(Exception, _on_unexpected)
