"""The client's saved settings: ``<config dir>/client.toml`` (mode 0600), written by ``sorakit login``.

Keys: ``server``, ``token``, ``cookie``, ``device_id``, ``sentinel_token``, ``user_agent`` (the
login), and ``max_outage`` (seconds to wait out a server that stopped answering; a preference, kept
when a new login replaces the rest). The config dir is ``SORAKIT_CONFIG_DIR``, else the platform's
user config dir.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import platformdirs

KEYS = ("server", "token", "cookie", "device_id", "sentinel_token", "user_agent", "max_outage")
PREFERENCES = ("max_outage",)  # not part of a login: save() keeps them unless given


def config_dir() -> Path:
    env = os.environ.get("SORAKIT_CONFIG_DIR")
    return Path(env).expanduser() if env else Path(platformdirs.user_config_dir("sorakit", appauthor=False))


def config_path() -> Path:
    return config_dir() / "client.toml"


def load() -> dict[str, str]:
    path = config_path()
    if not path.is_file():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    # ``is not None``, not truthiness: ``max_outage = 0`` (fail fast) is a setting
    return {k: str(v) for k, v in raw.items() if k in KEYS and v is not None and v != ""}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_value(key: str, value: str) -> str:
    if key in PREFERENCES:
        try:
            return repr(float(value))  # numbers stay numbers, as a person would write them
        except ValueError:
            pass
    return _quote(value)


def _preferences() -> dict[str, str]:
    try:
        return {k: v for k, v in load().items() if k in PREFERENCES}
    except ValueError:
        return {}  # an unreadable file is replaced whole, as before


def save(values: dict[str, str | None]) -> Path:
    """Write the given keys (other login keys dropped, preferences kept), owner-readable only."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {**_preferences(), **values}
    text = "".join(f"{k} = {_toml_value(k, v)}\n" for k, v in values.items()
                   if k in KEYS and v is not None and v != "")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
