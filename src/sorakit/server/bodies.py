"""JSON request bodies, parsed by us rather than by FastAPI, so every bound holds before pydantic.

``json_body(Model)`` is a dependency: it reads the body (already size-limited by the middleware in
``limits.py``), parses it whatever the ``Content-Type`` says (curl's ``-d`` sends a form type; the
protocol asks us to be generous), walks it against ``protocol.bounds``, then validates it. Every
refusal is a 400 in the envelope that names the field and never echoes the value.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from ..protocol import bounds, errors

M = TypeVar("M", bound=BaseModel)


def parse_json(data: bytes) -> Any:
    if not data.strip():
        raise errors.invalid_request("The request body is empty; send a JSON object.")
    try:
        return json.loads(data)
    except RecursionError:
        raise errors.invalid_request(f"The request body is nested more than {bounds.MAX_DEPTH} levels "
                                     "deep.") from None
    except (ValueError, UnicodeDecodeError):
        raise errors.invalid_request("The request body is not valid JSON.") from None


def validate(model: type[M], value: Any, limits: bounds.Limits = bounds.Limits()) -> M:
    if not isinstance(value, dict):
        raise errors.invalid_request("The request body must be a JSON object.")
    try:
        bounds.check(value, limits)
        parsed = model.model_validate(value)
        bounds.check_extra(parsed.model_extra)
    except bounds.BoundsError as exc:
        raise errors.invalid_request(exc.message, exc.param) from None
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False, include_url=False)) from None
    return parsed


def json_body(model: type[M]):
    """A dependency that yields ``(parsed, raw)``: the model and the request's own keys as JSON."""

    async def dependency(request: Request) -> tuple[M, dict[str, Any]]:
        parsed = validate(model, parse_json(await request.body()))
        return parsed, parsed.model_dump(mode="json", exclude_unset=True)

    return dependency


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting the body a ``json_body`` dependency reads."""
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": model.model_json_schema()}}}}
