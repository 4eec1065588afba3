"""Schema migrations: a list of small named steps, each applied once, in order.

A step is recorded in ``schema_migrations`` in the same transaction that applies it, so a crash
mid-migration leaves the database at the previous step. Add new steps at the end; never edit an
applied one. Step 0001 creates the tables as ``schema.py`` has them now, so later steps that only
add things must check first (``checkfirst=True``); a step that changes or drops a column must
first freeze 0001's table definitions here, so an empty database still replays history.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, insert, inspect, select

from . import schema


def _initial(conn: Connection) -> None:
    tables = [schema.users, schema.tokens, schema.tasks, schema.generations, schema.idempotency_keys]
    schema.metadata.create_all(conn, tables=tables)


def _status_finished_index(conn: Connection) -> None:
    # Recent run times (queue estimates) sorted every succeeded task of every user without it.
    index = next(i for i in schema.tasks.indexes if i.name == "ix_tasks_status_finished")
    index.create(conn, checkfirst=True)


def _uploads(conn: Connection) -> None:
    schema.uploads.create(conn, checkfirst=True)


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("0001_initial", _initial),
    ("0002_tasks_status_finished_index", _status_finished_index),
    ("0003_uploads", _uploads),
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
