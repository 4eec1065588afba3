"""Database engines. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions, so
concurrent writers queue instead of failing; any other SQLAlchemy URL is used as given."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event


WAL_SIZE_LIMIT = 64 * 1024 * 1024


def sqlite_engine(path: Path) -> Engine:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        # After each checkpoint that empties it, the WAL file is cut back to this size.
        cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Take the write lock up front: a read-then-write transaction (claiming a task) can then
        # never fail half-way with "database is locked".
        # Reads (marked ``readonly``) begin deferred so pollers never queue behind each other.
        readonly = conn.get_execution_options().get("readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine
