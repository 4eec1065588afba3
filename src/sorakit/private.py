"""Files only their owner can read: the data dir holds tokens, prompts and every video.

Directories are made 0700 and files 0600 explicitly, whatever the process umask, because the
embedded server runs inside a user's own command, whose umask we must not change.
"""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents, 0700 too) and make sure only the owner can enter it."""
    if not path.parent.exists():
        private_dir(path.parent)
    path.mkdir(exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def private_files(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            os.chmod(path, 0o600)
