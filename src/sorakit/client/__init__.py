"""The sorakit client: ``SoraClient`` (blocking) and ``AsyncSoraClient`` over one implementation."""

import logging

from .aio import AsyncSoraClient
from .core import Watch
from .errors import *  # noqa: F403  (the error classes are part of the client's API)
from .errors import redact
from .outage import OutageEvent
from .steps import RetryPolicy
from .sync import GenerateResult, SoraClient, Video

__all__ = ["AsyncSoraClient", "GenerateResult", "OutageEvent", "RetryPolicy", "SoraClient", "Video", "Watch"]


class _RedactLinks(logging.Filter):
    """httpx2 logs every URL at INFO: signed links must not reach logs with their signatures."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


logging.getLogger("httpx2").addFilter(_RedactLinks())
