"""The task store. ``open_store`` gives a migrated :class:`Store` over the data dir's SQLite file."""

from __future__ import annotations

from pathlib import Path

from .db import sqlite_engine
from .migrations import migrate
from .store import ACTIVE, TERMINAL, Claim, IdempotencyConflict, NameTaken, Store, Usage

__all__ = ["ACTIVE", "TERMINAL", "Claim", "IdempotencyConflict", "NameTaken", "Store", "Usage", "open_store"]


def open_store(db_path: Path) -> Store:
    engine = sqlite_engine(db_path)
    migrate(engine)
    return Store(engine)
