"""Every error leaves in the envelope of PROTOCOL section 6: FastAPI's own ones included."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..protocol import errors
from ..protocol.errors import ApiError

log = logging.getLogger("sorakit.server")


def respond(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.envelope(), status_code=exc.status, headers=exc.headers)


def _validation_message(err: dict) -> tuple[str, str | None]:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "header", "path")]
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


async def _on_http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        return respond(errors.not_found("URL"))
    if exc.status_code == 405:
        return respond(ApiError(405, "method_not_allowed", "This method is not allowed on this URL."))
    code = "invalid_request" if 400 <= exc.status_code < 500 else "server_error"
    return respond(ApiError(exc.status_code, code, str(exc.detail),
                            type="invalid_request_error" if code == "invalid_request" else "server_error"))


async def _on_api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return respond(exc)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return respond(errors.server_error())


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
