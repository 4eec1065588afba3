"""Schema migrations: a list of small named steps, each applied once, in order.

A step is recorded in ``schema_migrations`` in the same transaction that applies it, so a crash
mid-migration leaves the database at the previous step. Add new steps at the end; never edit an
applied one. (Step 0001 creates the tables of ``schema.py``: when a later step changes a table,
first freeze 0001's table definitions here, so an empty database still replays history.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, insert, inspect, select

from . import schema


def _initial(conn: Connection) -> None:
    tables = [schema.users, schema.tokens, schema.tasks, schema.generations, schema.idempotency_keys]
    schema.metadata.create_all(conn, tables=tables)


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("0001_initial", _initial),
]


def applied(conn: Connection) -> list[str]:
    if not inspect(conn).has_table("schema_migrations"):
        return []
    rows = conn.execute(select(schema.schema_migrations.c.name).order_by(schema.schema_migrations.c.name))
    return [r.name for r in rows]


def migrate(engine) -> list[str]:
    """Apply every pending step; return the names applied now."""
    with engine.begin() as conn:
        schema.schema_migrations.create(conn, checkfirst=True)
    done = []
    for name, step in MIGRATIONS:
        with engine.begin() as conn:
            if name in applied(conn):
                continue
            step(conn)
            conn.execute(insert(schema.schema_migrations).values(name=name, applied_at=time.time()))
        done.append(name)
    return done
