"""An OpenAPI document that tells the truth about auth and errors.

FastAPI documents only 200 and 422. The server never sends 422 (handlers.py answers validation
errors 400) and does send 401, 404, 413, 429, 503 and 500, all in the envelope of PROTOCOL
section 6. :func:`install` rewrites the generated document once, from what each route *is*
(its dependencies, parameters and body), so new routes are described without touching this file.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from . import routes_assets
from .deps import current_user

BEARER = "bearerAuth"
ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
# Routes that pass the quota and queue checks, which run inside the handler (create.submit) where
# the dependency tree cannot show them: they may answer 429 and 503.
THROTTLED = {("POST", "/backend/nf/create")}

_DESCRIPTIONS = {
    400: "Invalid request (`invalid_request`); `param` names the offending field.",
    401: "Missing, malformed, expired or revoked token (`invalid_token`, `token_expired`, "
         "`token_invalidated`).",
    404: "Nothing with this id belongs to the caller (`not_found`).",
    409: "This Idempotency-Key was already used with a different body (`idempotency_key_conflict`).",
    413: "The request body is too large.",
    429: "Too many generations in progress (`too_many_concurrent_tasks`) or the daily limit is "
         "used up (`rate_limit_exhausted`).",
    500: "The server had an error while processing the request (`internal_error`).",
    503: "We're under heavy load (`server_overloaded`): the queue is full.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                "schema": {"type": "integer"}}}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json`` and ``/docs``) return the amended document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():
                # FastAPI names GET and HEAD of one route alike; _unique_operation_ids fixes that.
                warnings.filterwarnings("ignore", message="Duplicate Operation ID")
                document = generate()
            _amend(app, document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _amend(app: FastAPI, document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "A token from `sorakit token create NAME`, or the `accessToken` of "
                       "`GET /api/auth/session` (PROTOCOL section 1)."}
    schemas = components.setdefault("schemas", {})
    schemas.update(_envelope_schemas())
    for route, method, operation in _operations(app, document):
        _describe(route, method, operation)
    # Only the 422 answers referred to these; a document should not carry dead definitions.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    _unique_operation_ids(document)


def _operations(app: FastAPI, document: dict[str, Any]) -> Iterator[tuple[Any, str, dict]]:
    """Each documented operation with the route that serves it."""
    paths = document.get("paths", {})
    for route in iter_route_contexts(app.routes):
        if not getattr(route, "include_in_schema", False) or not hasattr(route, "dependant"):
            continue
        for method in sorted(route.methods or ()):
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is not None:
                yield route, method, operation


def _describe(route: Any, method: str, operation: dict) -> None:
    responses = operation.setdefault("responses", {})
    validates = responses.pop("422", None) is not None
    if route.endpoint is routes_assets.asset:
        _describe_asset(operation)
        return
    statuses = _statuses(route, method, operation, validates)
    for status in sorted(statuses):
        responses[str(status)] = _error_response(status)
    if 401 in statuses:
        operation["security"] = [{BEARER: []}]


def _statuses(route: Any, method: str, operation: dict, validates: bool) -> set[int]:
    """The error statuses a route can answer, read from what it depends on and takes."""
    # Routes may read their body themselves and document it with openapi_extra, so the document,
    # not route.body_field, says whether there is one.
    has_body = "requestBody" in operation
    statuses = {500}
    if validates or has_body:
        statuses.add(400)
    if _needs(route.dependant, current_user):
        statuses.add(401)
    if route.dependant.path_params:
        statuses.add(404)
    if any(p.alias.lower() == "idempotency-key" for p in route.dependant.header_params):
        statuses.add(409)
    if has_body:
        statuses.add(413)
    if (method, route.path_format) in THROTTLED:
        statuses |= {429, 503}
    return statuses


def _needs(dependant: Dependant, call: Any) -> bool:
    """Whether ``call`` is a dependency anywhere below ``dependant`` (routers may add it too)."""
    return any(d.call is call or _needs(d, call) for d in dependant.dependencies)


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _DESCRIPTIONS[status],
                                "content": {"application/json": {"schema": {"$ref": ENVELOPE_REF}}}}
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response


def _describe_asset(operation: dict) -> None:
    """Signed links answer like the blob storage they replace: media, or XML refusals."""
    media = {mime: {"schema": {"type": "string", "format": "binary"}}
             for _column, mime in routes_assets.FILES.values()}
    xml = {"application/xml": {"schema": {"type": "string"}}}
    operation["parameters"] = operation.get("parameters", []) + [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"},
         "description": description}
        for name, description in (("se", "Expiry (ISO 8601)."), ("sp", "Permissions: `r`."),
                                  ("sig", "Signature over path, expiry and permissions."))]
    operation["responses"] = {
        "200": {"description": "The file.", "content": media},
        "206": {"description": "The requested byte range.", "content": media},
        "403": {"description": "Missing, altered or expired signature (`AuthenticationFailed`).",
                "content": xml},
        "404": {"description": "No such file (`BlobNotFound`).", "content": xml},
        "416": {"description": "The range starts past the end of the file."},
        "500": _error_response(500),
    }


def _envelope_schemas() -> dict[str, Any]:
    nullable_string = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    return {
        "ErrorDetail": {
            "type": "object", "title": "ErrorDetail",
            "required": ["message", "type", "param", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": nullable_string, "code": {"type": "string"}}},
        "ErrorEnvelope": {
            "type": "object", "title": "ErrorEnvelope", "required": ["error", "status"],
            "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"},
                           "status": {"type": "integer", "description": "The HTTP status, repeated."}}},
    }


def _unique_operation_ids(document: dict[str, Any]) -> None:
    """FastAPI gives every method of a multi-method route the first method's id; OpenAPI wants
    each id once, so a repeated one takes its own method as suffix."""
    operations = [(method, op) for ops in document.get("paths", {}).values() for method, op in ops.items()]
    counts = Counter(op.get("operationId") for _method, op in operations)
    for method, op in operations:
        if op.get("operationId") and counts[op["operationId"]] > 1:
            op["operationId"] = re.sub(r"_[a-z]+$", f"_{method}", op["operationId"])
