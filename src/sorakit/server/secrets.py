"""The server's master secret, kept in the data dir (mode 0600), and the keys derived from it.

One random file; separate keys per purpose, so a leaked link key cannot forge tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def _create(path: Path) -> bytes:
    """Write a new secret whole, then link it into place: a concurrent starter never reads half."""
    value = secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value.hex() + "\n")
    try:
        os.link(tmp, path)  # fails with FileExistsError when another process won
    finally:
        tmp.unlink()
    return value


def master_secret(data_dir: Path) -> bytes:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secret.key"
    try:
        return _create(path)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())


def derive(master: bytes, purpose: str) -> bytes:
    return hmac.new(master, purpose.encode(), hashlib.sha256).digest()


def shared_master_secret(settings, store) -> bytes:
    """The master secret of a server: on a shared database (PostgreSQL) it lives there, so every
    API node and worker of the fleet signs and checks tokens and links alike with no file to copy;
    on SQLite it is the data dir's ``secret.key``, as it always was."""
    if store.engine.dialect.name == "sqlite":
        return master_secret(settings.data_dir)
    return bytes.fromhex(store.shared_value("master_secret", lambda: secrets.token_bytes(32).hex()))
