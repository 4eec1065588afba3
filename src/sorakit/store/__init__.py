"""The task store. ``open_store`` gives a migrated :class:`Store` over a SQLite file (one machine)
or a PostgreSQL database (a fleet); ``store_for`` picks the one a server's settings name."""

from __future__ import annotations

from pathlib import Path

from .db import DatabaseClock, postgres_engine, sqlite_engine
from .migrations import migrate
from .store import ACTIVE, FLEET_ALIVE, TERMINAL, Claim, IdempotencyConflict, NameTaken, Store, Usage

__all__ = ["ACTIVE", "FLEET_ALIVE", "TERMINAL", "Claim", "IdempotencyConflict", "NameTaken", "Store", "Usage", "open_store",
           "store_for"]


def open_store(where: Path | str) -> Store:
    """A migrated store: ``where`` is a SQLite file's path, or a ``postgresql://`` URL."""
    text = str(where)
    if text.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        engine = postgres_engine(text)
        migrate(engine)
        # machines sharing it agree on the time: leases are judged on the database's clock
        return Store(engine, clock=DatabaseClock(engine))
    engine = sqlite_engine(Path(text.removeprefix("sqlite:///")) if text.startswith("sqlite:///") else Path(where))
    migrate(engine)
    return Store(engine)


def store_for(settings) -> Store:
    """The store a server's settings name: ``database_url``, else ``<data_dir>/sorakit.db``."""
    return open_store(settings.database_url or settings.db_path)
