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

from sqlalchemy import Column, Connection, Table, insert, inspect, select

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


def _add_column(conn: Connection, table: Table, column: Column) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for a nullable column, unless 0001 already made it.

    The type and names are rendered by the connection's own dialect, so the same step runs on
    SQLite and PostgreSQL.
    """
    if column.name in {c["name"] for c in inspect(conn).get_columns(table.name)}:
        return
    quote = conn.dialect.identifier_preparer.quote
    kind = column.type.compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}")


def _generations_spritesheet(conn: Connection) -> None:
    _add_column(conn, schema.generations, schema.generations.c.spritesheet_file)


def _webhooks(conn: Connection) -> None:
    schema.webhook_endpoints.create(conn, checkfirst=True)
    schema.webhook_deliveries.create(conn, checkfirst=True)


def _sessions(conn: Connection) -> None:
    for column in ("password_hash", "disabled_at", "email"):
        _add_column(conn, schema.users, schema.users.c[column])
    schema.sessions.create(conn, checkfirst=True)
    schema.signin_failures.create(conn, checkfirst=True)


def _operations_and_posts(conn: Connection) -> None:
    for column in ("operation", "inputs", "n_variants"):
        _add_column(conn, schema.tasks, schema.tasks.c[column])
    schema.posts.create(conn, checkfirst=True)


def _queue_index(conn: Connection) -> None:
    # The claim index gains ``id``, the last key of the claim's ORDER BY: the head of the queue is
    # then read in order, never sorted. The new index replaces the one it extends.
    next(i for i in schema.tasks.indexes if i.name == "ix_tasks_queue").create(conn, checkfirst=True)
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {conn.dialect.identifier_preparer.quote('ix_tasks_claim')}")


def _fleet(conn: Connection) -> None:
    schema.workers.create(conn, checkfirst=True)
    schema.shared_values.create(conn, checkfirst=True)


def _wider_columns(conn: Connection) -> None:
    # What PostgreSQL enforces and SQLite never did: seeds up to 2**63 (the request allows them),
    # style ids of 200 characters, files over 2 GiB. SQLite keeps any value in any column already.
    if conn.dialect.name != "postgresql":
        return
    for table, column, kind in (("tasks", "seed", "BIGINT"), ("tasks", "style_id", "VARCHAR(200)"),
                                ("generations", "video_bytes", "BIGINT"), ("uploads", "bytes", "BIGINT")):
        conn.exec_driver_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE {kind}')


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("0001_initial", _initial),
    ("0002_tasks_status_finished_index", _status_finished_index),
    ("0003_uploads", _uploads),
    ("0004_generations_spritesheet", _generations_spritesheet),
    ("0005_webhooks", _webhooks),
    ("0006_sessions", _sessions),
    ("0007_operations_and_posts", _operations_and_posts),
    ("0008_queue_index", _queue_index),
    ("0009_fleet", _fleet),
    ("0010_wider_columns", _wider_columns),
]


def applied(conn: Connection) -> list[str]:
    if not inspect(conn).has_table("schema_migrations"):
        return []
    rows = conn.execute(select(schema.schema_migrations.c.name).order_by(schema.schema_migrations.c.name))
    return [r.name for r in rows]


#: the PostgreSQL advisory lock migrations run under (any constant shared by every node)
MIGRATION_LOCK = 0x50_7A_4B_17


def migrate(engine) -> list[str]:
    """Apply every pending step; return the names applied now.

    Several nodes may start at once on one database: on PostgreSQL every step runs under a
    session advisory lock, so one node applies them and the others find them applied; on SQLite
    each step's ``BEGIN IMMEDIATE`` does the same."""
    done = []
    with engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
            conn.commit()
        try:
            with conn.begin():
                schema.schema_migrations.create(conn, checkfirst=True)
            for name, step in MIGRATIONS:
                with conn.begin():
                    if name in applied(conn):
                        continue
                    step(conn)
                    conn.execute(insert(schema.schema_migrations).values(name=name, applied_at=time.time()))
                done.append(name)
        finally:
            if postgres:
                conn.rollback()
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
                conn.commit()
    return done
