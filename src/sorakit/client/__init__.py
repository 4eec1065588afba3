"""The sorakit client: ``SoraClient`` (blocking) and ``AsyncSoraClient`` over one implementation."""

from .aio import AsyncSoraClient
from .core import Watch
from .errors import *  # noqa: F403  (the error classes are part of the client's API)
from .steps import RetryPolicy
from .sync import GenerateResult, SoraClient

__all__ = ["AsyncSoraClient", "GenerateResult", "RetryPolicy", "SoraClient", "Watch"]
