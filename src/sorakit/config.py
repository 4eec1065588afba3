"""Settings: command-line flags over ``SORAKIT_*`` environment variables over ``config.toml``.

``config.toml`` lives in the data directory. Every key below may appear there, at top level; the
environment variable of ``link_ttl_seconds`` is ``SORAKIT_LINK_TTL_SECONDS``, and so on. Lists
(``blocked_terms``) are comma-separated in the environment.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("sorakit", appauthor=False))


@dataclass
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    #: "process": each worker is a `sorakit worker` process, so rendering and encoding never hold
    #: the API's GIL; "thread": workers run inside the API process (tests, engines built in code)
    worker_mode: str = "process"
    #: how much lower the CPU priority of serve's worker processes is than the API's (a nice
    #: increment, 0-19): on a machine they share, encoding yields the CPU to requests
    worker_nice: int = 10
    preview_pace: float = 0.0
    public_base_url: str | None = None
    link_ttl_seconds: int = 24 * 3600
    #: how long a finished task stays in ``pending/v2`` (PROTOCOL section 3: ~15 s serves every
    #: known client; clients that wait for the task to leave stall for this long after each video)
    finished_window_seconds: float = 15.0
    max_frames: int = 750
    #: most videos one request may ask for (``nsamples``: variations); the quota counts each
    max_variants: int = 4
    #: most shots in one storyboard
    max_shots: int = 10
    #: videos get sound when their engine makes it (a request may still send "audio": false)
    audio: bool = True
    max_prompt_chars: int = 10_000
    default_concurrency: int = 3
    default_daily_limit: int = 100
    max_queue: int = 1000
    lease_seconds: float = 30.0
    max_attempts: int = 3
    blocked_terms: list[str] = field(default_factory=list)
    #: largest request body on JSON routes, in bytes (checked while reading, before parsing)
    max_body_bytes: int = 256 * 1024
    #: largest uploaded image, in bytes; and each user's total kept uploads
    upload_max_bytes: int = 20 * 1024 * 1024
    upload_quota_bytes: int = 500 * 1024 * 1024
    #: uploads older than this are deleted (unless an unfinished task still needs them)
    upload_retention_seconds: float = 7 * 86400.0
    #: finished tasks with no draft left, and idempotency keys, are pruned after this long
    task_retention_seconds: float = 30 * 86400.0
    #: seconds between maintenance passes (temp leftovers, retention, WAL checkpoint)
    maintenance_interval_seconds: float = 60.0
    #: peers (IPs or CIDRs) whose X-Forwarded-Proto/-Host/-For headers are believed
    trusted_proxies: list[str] = field(default_factory=list)
    default_engine: str = "preview"
    #: ``[models]``: a string value aliases a request ``model`` id to an engine or model name; a
    #: table defines a diffusers model of that name (see engines/models.py). ``sy_8``, ``sy_ore``
    #: and dated ``sy_8_*`` ids use default_engine unless aliased here.
    models: dict[str, str | dict] = field(default_factory=dict)
    #: where ``sorakit models pull`` puts weights (default: <data_dir>/models)
    models_dir: Path | None = None
    #: ``POST /backend/editor/enhance_prompt`` asks this OpenAI-compatible chat endpoint (a base URL
    #: such as ``http://127.0.0.1:8080/v1``; ``/chat/completions`` is appended). Unset: refused.
    prompt_enhancer_url: str | None = None
    prompt_enhancer_model: str = "default"
    prompt_enhancer_api_key: str | None = None  # sent as ``Authorization: Bearer``; never shown
    prompt_enhancer_timeout_seconds: float = 60.0
    #: the store: unset, the SQLite file <data_dir>/sorakit.db (one machine); a
    #: ``postgresql://user:pass@host/db`` URL for a fleet (API nodes and workers share it)
    database_url: str | None = None
    #: where videos, thumbnails and uploads are kept: unset, <data_dir>/media; another directory
    #: (a shared mount); or ``s3://bucket/prefix`` (S3-compatible; links are presigned GETs)
    media: str | None = None
    #: the S3 endpoint and region for an ``s3://`` media setting (else boto3's own environment:
    #: AWS_ENDPOINT_URL, AWS_REGION / AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    #: the bucket's address as clients reach it, when nodes use an internal one (e.g. MinIO at
    #: http://minio:9000 inside, https://media.example.com outside): links are presigned for it
    s3_public_url: str | None = None
    #: this worker's name in the ``workers`` table (default: host name and process id)
    worker_name: str | None = None
    #: peers (IPs or CIDRs) allowed to read ``/metrics``; empty turns it off. No token is asked:
    #: keep it to loopback or a monitoring network
    metrics_allow: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])

    @property
    def db_path(self) -> Path:
        return self.data_dir / "sorakit.db"

    @property
    def media_dir(self) -> Path:
        """The local media folder (for ``s3://`` media, still where temporary files go)."""
        if self.media and not self.media.startswith("s3://"):
            return Path(self.media).expanduser()
        return self.data_dir / "media"

    @property
    def weights_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    try:
        if name == "data_dir":
            return Path(value).expanduser()
        if name in ("blocked_terms", "trusted_proxies", "metrics_allow"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(t).strip() for t in items if str(t).strip()]
        if name == "models":
            if not isinstance(value, dict):
                raise TypeError("expected a table")
            return {str(k): v if isinstance(v, dict) else str(v) for k, v in value.items()}
        if name == "models_dir":
            return Path(value).expanduser() if value else None
        if kind == "bool":
            return _boolean(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "str | None":
            return str(value) if value not in (None, "") else None
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: cannot use {value!r} ({exc})") from None


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _from_toml(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "config.toml"
    if not path.is_file():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(raw) - set(_FIELDS)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return raw


def _from_env(env: dict[str, str]) -> dict[str, Any]:
    found = {}
    for name in _FIELDS:
        key = "SORAKIT_" + name.upper()
        if key in env and name != "models":
            found[name] = env[key]
    return found


def load_settings(overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Merge the three sources; ``overrides`` (flags) win, ``None`` values are ignored."""
    env = dict(os.environ) if env is None else env
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    env_values = _from_env(env)
    data_dir = flags.get("data_dir") or env_values.get("data_dir") or default_data_dir()
    merged = {**_from_toml(Path(data_dir).expanduser()), **env_values, **flags}
    merged["data_dir"] = data_dir
    settings = Settings(**{k: _coerce(k, v) for k, v in merged.items()})
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    checks = [
        ("workers", s.workers >= 0), ("max_frames", s.max_frames >= 1),
        ("worker_mode", s.worker_mode in ("process", "thread")), ("worker_nice", 0 <= s.worker_nice <= 19),
        ("max_variants", s.max_variants >= 1), ("max_shots", s.max_shots >= 1),
        ("link_ttl_seconds", s.link_ttl_seconds > 0), ("lease_seconds", s.lease_seconds > 0),
        ("max_attempts", s.max_attempts >= 1), ("preview_pace", s.preview_pace >= 0),
        ("finished_window_seconds", s.finished_window_seconds >= 0),
        ("default_concurrency", s.default_concurrency >= 1),
        ("default_daily_limit", s.default_daily_limit >= 1), ("max_queue", s.max_queue >= 1),
        ("max_body_bytes", s.max_body_bytes >= 16 * 1024), ("upload_max_bytes", s.upload_max_bytes >= 1024),
        ("upload_quota_bytes", s.upload_quota_bytes >= s.upload_max_bytes),
        ("upload_retention_seconds", s.upload_retention_seconds >= 3600),
        # the daily quota counts the last 24 hours of tasks: they must outlive that
        ("task_retention_seconds", s.task_retention_seconds >= 86400),
        ("maintenance_interval_seconds", s.maintenance_interval_seconds > 0),
        ("prompt_enhancer_timeout_seconds", 0 < s.prompt_enhancer_timeout_seconds <= 3600),
    ]
    for name, ok in checks:
        if not ok:
            raise ConfigError(f"setting {name!r} is out of range: {getattr(s, name)!r}")
    if s.database_url and not s.database_url.lower().startswith(("postgresql://", "postgresql+psycopg://",
                                                                 "postgres://", "sqlite://")):
        raise ConfigError("setting 'database_url' must be a postgresql:// URL (or sqlite:///PATH): "
                          f"{s.database_url.split('@')[-1]!r}")
    if s.media and s.media.startswith("s3://") and not s.media[5:].split("/")[0]:
        raise ConfigError(f"setting 'media' names no bucket: {s.media!r} (expected s3://bucket/prefix)")
    if s.prompt_enhancer_url and not s.prompt_enhancer_url.lower().startswith(("http://", "https://")):
        raise ConfigError("setting 'prompt_enhancer_url' must be an http:// or https:// URL, such as "
                          f"http://127.0.0.1:8080/v1: {s.prompt_enhancer_url!r}")


def settings_json(settings: Settings) -> dict[str, Any]:
    """Every setting as JSON, for a worker process to load exactly what its parent runs with."""
    out = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out
