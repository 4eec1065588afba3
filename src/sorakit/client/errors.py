"""Every error the client raises, one class per case. The tree:

    SoraError
    ├── APIError                      the server answered with an error envelope (or a bare status)
    │   ├── BadRequestError           400 invalid_request (``param`` names the field)
    │   ├── AuthenticationError       401
    │   │   ├── InvalidTokenError     invalid_token: missing or unparsable
    │   │   ├── TokenExpiredError     token_expired (``expired_at`` read from the token's ``exp``)
    │   │   └── TokenRevokedError     token_invalidated
    │   ├── PermissionDeniedError     403 (a refused API call; refused downloads are refreshed)
    │   ├── NotFoundError             404
    │   ├── ConflictError             409 idempotency_key_conflict
    │   ├── RateLimitError            429 (``retry_after`` seconds, from Retry-After)
    │   │   ├── ConcurrencyLimitError too_many_concurrent_tasks (``in_progress``)
    │   │   └── DailyLimitError       rate_limit_exhausted
    │   └── ServerError               5xx
    │       └── OverloadedError       503, "heavy load"
    ├── TaskError                     a task ended without a video (``task_id``, ``task``)
    │   ├── TaskFailedError           failed (``reason``)
    │   │   └── ContentViolationError refused by moderation (``reason``, ``markdown_reason``)
    │   └── TaskCancelledError        cancelled
    ├── TransportError                no usable answer
    │   ├── ConnectError              could not connect
    │   ├── ReadTimeoutError          the server stopped answering
    │   └── IncompleteBodyError       a body ended before its Content-Length
    ├── DownloadError                 a download could not complete (link refused, size wrong)
    └── WaitTimeoutError              ``wait`` ran past its overall timeout

Messages never contain tokens or link signatures. An error raised after the client retried
through an outage for as long as ``RetryPolicy.max_outage`` allows has ``outage`` set (the seconds
it waited) and a message that ends with how long the server was out.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

_SIG = re.compile(r"(sig=)[^&\s\"']+")


def redact(text: str) -> str:
    """Strip link signatures and bearer tokens from text meant for people."""
    text = _SIG.sub(r"\1REDACTED", text)
    return re.sub(r"(Bearer\s+)[\w\-.]+", r"\1REDACTED", text)


class SoraError(Exception):
    """Base of every sorakit client error."""

    #: seconds the client retried through an outage before giving up with this error (else None)
    outage: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))
        self.message = redact(message)


class APIError(SoraError):
    def __init__(self, message: str, *, status: int, code: str | None = None, param: str | None = None,
                 body: Any = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param, self.body = status, code, param, body
        self.retry_after = retry_after


class BadRequestError(APIError):
    pass


class AuthenticationError(APIError):
    pass


class InvalidTokenError(AuthenticationError):
    pass


class TokenExpiredError(AuthenticationError):
    expired_at: float | None = None


class TokenRevokedError(AuthenticationError):
    pass


class PermissionDeniedError(APIError):
    pass


class NotFoundError(APIError):
    pass


class ConflictError(APIError):
    pass


class RateLimitError(APIError):
    pass


class ConcurrencyLimitError(RateLimitError):
    @property
    def in_progress(self) -> int | None:
        found = re.search(r"have (\d+) generation", self.message)
        return int(found.group(1)) if found else None


class DailyLimitError(RateLimitError):
    pass


class ServerError(APIError):
    pass


class OverloadedError(ServerError):
    pass


class TaskError(SoraError):
    def __init__(self, message: str, *, task_id: str, task: dict | None = None) -> None:
        super().__init__(message)
        self.task_id, self.task = task_id, task


class TaskFailedError(TaskError):
    def __init__(self, message: str, *, task_id: str, task: dict | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message, task_id=task_id, task=task)
        self.reason = reason


class ContentViolationError(TaskFailedError):
    markdown_reason: str | None = None


class TaskCancelledError(TaskError):
    pass


class TransportError(SoraError):
    pass


class ConnectError(TransportError):
    pass


class ReadTimeoutError(TransportError):
    pass


class IncompleteBodyError(TransportError):
    pass


class DownloadError(SoraError):
    pass


class WaitTimeoutError(SoraError):
    pass


BY_CODE: dict[str, type[APIError]] = {
    "invalid_request": BadRequestError,
    "invalid_token": InvalidTokenError,
    "token_expired": TokenExpiredError,
    "token_invalidated": TokenRevokedError,
    "not_found": NotFoundError,
    "idempotency_key_conflict": ConflictError,
    "too_many_concurrent_tasks": ConcurrencyLimitError,
    "rate_limit_exhausted": DailyLimitError,
    "server_overloaded": OverloadedError,
}
BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
    409: ConflictError, 422: BadRequestError, 429: RateLimitError, 503: OverloadedError,
}


def _retry_after(headers) -> float | None:
    try:
        return max(float(headers.get("retry-after")), 0.0)
    except (TypeError, ValueError):
        return None


def from_response(status: int, body: Any, headers, token_exp: float | None = None) -> APIError:
    """The exception for an error response: by envelope ``code``, else by HTTP status."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    cls = BY_CODE.get(code) or BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    message = error.get("message") or (body if isinstance(body, str) and body else f"HTTP {status}")
    exc = cls(f"{message} (HTTP {status}{', ' + code if code else ''})", status=status, code=code,
              param=error.get("param"), body=body, retry_after=_retry_after(headers))
    if isinstance(exc, TokenExpiredError) and token_exp:
        exc.expired_at = token_exp
        when = datetime.fromtimestamp(token_exp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        exc.message = f"{exc.message}; the token expired at {when}"
        exc.args = (exc.message,)
    return exc
