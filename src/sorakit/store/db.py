"""Database engines. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions, so
concurrent writers queue instead of failing; any other SQLAlchemy URL is used as given."""

from __future__ import annotations

import threading
import time
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


def database_url(url: str) -> str:
    """A PostgreSQL URL as SQLAlchemy names its psycopg 3 driver (``postgresql://`` and
    ``postgres://`` would pick psycopg2)."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url


def postgres_engine(url: str) -> Engine:
    """PostgreSQL through psycopg 3: READ COMMITTED, with row locks where a decision needs one
    (claims skip rows another worker holds; a quota decision locks its user's row).

    ``pool_pre_ping`` drops connections a restarted database closed, so nodes outlive a failover."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise RuntimeError("a postgresql:// database_url needs psycopg 3: pip install 'sorakit[fleet]'") from None
    return create_engine(database_url(url), pool_pre_ping=True, pool_size=10, max_overflow=20,
                         connect_args={"connect_timeout": 10, "application_name": "sorakit"})


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors."""
    import re

    url = re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)  # libpq's query-string form
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _password = creds.partition(":")
    return f"{scheme}{sep}{user}{':***' if colon else ''}@{host}"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An error's first line, for a log line (drivers' messages run to the SQL and its parameters)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def database_errors() -> tuple[type[Exception], ...]:
    """The exception types of a database that cannot be reached: SQLAlchemy's, and the drivers'
    own (the hot path's plain SQL runs on the driver's connection)."""
    import sqlite3

    from sqlalchemy.exc import InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    # (a pool with every connection taken past its timeout: a database too slow to answer)
    found: list[type[Exception]] = [OperationalError, InterfaceError, PoolTimeout, sqlite3.OperationalError]
    try:
        import psycopg

        # ReadOnlySqlTransaction: a failover left this node on a replica for a moment
        found += [psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction]
    except ImportError:
        pass
    return tuple(found)


class DatabaseClock:
    """Wall-clock seconds as the database server counts them, for a store several machines share.

    Leases are stamped by the machine that takes or renews them and judged by another: on each
    machine's own clock, one running ``lease_seconds`` ahead would take tasks that are alive. This
    clock is the local clock plus an offset to the database's ``clock_timestamp()``, measured at
    the first call and again every ``resync`` seconds (one query; the offset is taken at the
    midpoint of the round trip, so it is right to within half of one). When the database cannot be
    asked, the last offset stays."""

    def __init__(self, engine: Engine, resync: float = 60.0, local=time.time) -> None:
        self.engine, self.resync, self.local = engine, resync, local
        self.offset = 0.0
        self._synced_at: float | None = None
        self._lock = threading.Lock()

    def sync(self) -> float:
        before = self.local()
        with self.engine.connect() as conn:
            server = float(conn.exec_driver_sql("SELECT EXTRACT(EPOCH FROM clock_timestamp())").scalar_one())
        after = self.local()
        self.offset = server - (before + after) / 2
        self._synced_at = time.monotonic()
        return self.offset

    def __call__(self) -> float:
        due = self._synced_at is None or time.monotonic() - self._synced_at >= self.resync
        if due and self._lock.acquire(blocking=self._synced_at is None):
            try:
                self.sync()
            except Exception:  # the database is away: keep the last offset, try again later
                self._synced_at = time.monotonic()
            finally:
                self._lock.release()
        return self.local() + self.offset
