"""The sorakit client: ``SoraClient`` (blocking) and ``AsyncSoraClient`` over one implementation.

The classes load on first use (PEP 562): ``from sorakit.client import errors`` or ``files`` stays
light, so a command that never sends a request does not import the HTTP stack.
"""

import importlib
import logging

from .errors import *  # noqa: F403  (the error classes are part of the client's API)
from .errors import redact

__all__ = ["AsyncSoraClient", "GenerateResult", "OutageEvent", "RetryPolicy", "SoraClient", "Video", "Watch"]
_HOMES = {"AsyncSoraClient": ".aio", "GenerateResult": ".sync", "SoraClient": ".sync", "Video": ".sync",
          "Watch": ".core", "OutageEvent": ".outage", "RetryPolicy": ".steps"}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


class _RedactLinks(logging.Filter):
    """httpx2 logs every URL at INFO: signed links must not reach logs with their signatures."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


logging.getLogger("httpx2").addFilter(_RedactLinks())
