"""Logging for uvicorn: access lines without query strings, and no noise from harmless upgrades.

Download links are capability URLs (``?se=...&sp=r&sig=...``): whoever reads an access log that
holds them can fetch every video for a day. So the access log shows the path alone. Requests with
``Upgrade: h2c`` (some HTTP clients send it on every call) are served as plain HTTP/1.1, which is
correct; uvicorn still warns twice for each, which buries real warnings.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

QUIET_UPGRADE = ("Unsupported upgrade request.", "No supported WebSocket library detected")


class RedactQuery(logging.Filter):
    """Drop the query string from uvicorn's access records (args: client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


class QuietUpgrade(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(QUIET_UPGRADE)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging setup with our two filters attached."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {}).update({
        "redact_query": {"()": f"{__name__}.RedactQuery"},
        "quiet_upgrade": {"()": f"{__name__}.QuietUpgrade"},
    })
    config["loggers"]["uvicorn.access"].setdefault("filters", []).append("redact_query")
    config["loggers"]["uvicorn.error"].setdefault("filters", []).append("quiet_upgrade")
    return config
