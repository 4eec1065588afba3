"""The error envelope of PROTOCOL section 6, and the codes the server sends.

``{"error": {"message", "type", "param", "code"}, "status": <http status>}``
"""

from __future__ import annotations

from typing import Any

HEAVY_LOAD = "We're under heavy load, please try again later."
INVALIDATED = "Your authentication token has been invalidated. Please try signing in again."


class ApiError(Exception):
    """An error answered to the client in the envelope, with its HTTP status and headers."""

    def __init__(self, status: int, code: str, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type
        self.param = param
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}, "status": self.status}


def invalid_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request", message, param=param)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"The requested {what} was not found.")


def invalid_token(detail: str = "") -> ApiError:
    message = "Could not parse your authentication token. Please try signing in again."
    return ApiError(401, "invalid_token", message + (f" ({detail})" if detail else ""),
                    type="invalid_request_error")


def token_expired() -> ApiError:
    return ApiError(401, "token_expired",
                    "Your authentication token has expired. Please try signing in again.")


def token_invalidated() -> ApiError:
    return ApiError(401, "token_invalidated", INVALIDATED)


def too_many_concurrent(n: int, retry_after: int) -> ApiError:
    noun = "generation" if n == 1 else "generations"
    return ApiError(429, "too_many_concurrent_tasks", f"You already have {n} {noun} in progress. "
                    "Please wait until one finishes.", type="rate_limit_error",
                    headers={"Retry-After": str(retry_after)})


def rate_limit_exhausted(limit: int, retry_after: int) -> ApiError:
    return ApiError(429, "rate_limit_exhausted", f"You have used all {limit} of your generations for "
                    f"the last 24 hours. More become available in {retry_after} seconds.",
                    type="rate_limit_error",
                    # the openai SDKs obey x-should-retry: waiting hours inside a call helps nobody
                    headers={"Retry-After": str(retry_after), "x-should-retry": "false"})


def not_enough_quota(wanted: int, remaining: int, retry_after: int) -> ApiError:
    return ApiError(429, "rate_limit_exhausted", f"This request makes {wanted} videos, but only {remaining} "
                    f"of your generations for the last 24 hours are left; ask for fewer, or wait "
                    f"{retry_after} seconds.", type="rate_limit_error", param="nsamples",
                    headers={"Retry-After": str(retry_after), "x-should-retry": "false"})


def heavy_load(retry_after: int = 30) -> ApiError:
    return ApiError(503, "server_overloaded", HEAVY_LOAD, type="server_error",
                    headers={"Retry-After": str(retry_after)})


def idempotency_conflict() -> ApiError:
    return ApiError(409, "idempotency_key_conflict", "This Idempotency-Key was already used with a "
                    "different request body.", param="Idempotency-Key")


def server_error() -> ApiError:
    return ApiError(500, "internal_error", "The server had an error while processing your request.",
                    type="server_error")
