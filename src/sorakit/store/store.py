"""The task store: users, tokens, tasks, generations and idempotency keys.

Tasks move forward through a status column; a worker owns a task only while its lease
(``lease_owner`` + ``lease_expires``) is current, and every write a worker makes is conditional on
still holding it. So a crashed worker's task is taken again once its lease runs out, and a worker
that lost its lease can never record a result twice.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (JSON, Boolean, Engine, Table, and_, bindparam, delete, func, insert, or_, select,
                        update)
from sqlalchemy.exc import IntegrityError

from ..ids import new_id
from . import webhooks
from .schema import (generations, idempotency_keys, posts, sessions, shared_values, signin_failures, tasks, tokens,
                     uploads, users, workers)

ACTIVE = ("preprocessing", "queued", "running", "processing")
TERMINAL = ("succeeded", "failed", "cancelled")
WAITING = ("preprocessing", "queued")  # what the global queue limit counts
IDEMPOTENCY_WINDOW = 24 * 3600.0
#: how long a verified token (and its user's row) is believed without asking the database again:
#: a revocation or a disabled user made by another process takes effect within this (one made
#: through this process's store, at once)
AUTH_CACHE_SECONDS = 0.5
AUTH_CACHE_SIZE = 10_000
#: a worker whose row was not seen for this long (its heartbeat is every 5 s) counts as lost
FLEET_ALIVE = 30.0


class IdempotencyConflict(Exception):
    """The key was used before, within its window, with a different body."""


class NameTaken(Exception):
    pass


@dataclass(frozen=True)
class Claim:
    task: dict[str, Any]
    owner: str


class Usage:
    """A user's counts as one transaction sees them (the quota's inputs).

    Every count takes an optional ``bound``: the caller only needs to know whether it reaches
    that (a limit), so counting stops there and the cost does not grow with the store."""

    def __init__(self, conn, user_id: str) -> None:
        self.conn, self.user_id = conn, user_id

    def active(self, bound: int | None = None) -> int:
        return _count_active(self.conn, self.user_id, bound)

    def created_since(self, since: float) -> list[float]:
        return _created_since(self.conn, self.user_id, since)

    def daily(self, since: float, limit: int) -> tuple[int, float | None]:
        return _daily(self.conn, self.user_id, since, limit)

    def queued(self, bound: int | None = None) -> int:
        return _count_queued(self.conn, bound)

    def queue_reaches(self, limit: int) -> bool:
        return _queue_reaches(self.conn, limit)


_ACTIVE_IN = ", ".join(f"'{s}'" for s in ACTIVE)
_WAITING_IN = ", ".join(f"'{s}'" for s in WAITING)
_MARKER = re.compile(r"(?<![:\w]):(\w+)")


@functools.lru_cache(maxsize=1024)
def _marked(sql: str, pyformat: bool) -> str:
    """``:name`` markers as the driver wants them (sqlite3 takes them as they are; psycopg wants
    ``%(name)s``)."""
    return _MARKER.sub(r"%(\1)s", sql) if pyformat else sql


def _pyformat(dialect) -> bool:
    return dialect.name != "sqlite" and getattr(dialect.dbapi, "paramstyle", "named") in ("pyformat", "format")


def _on(conn, sql: str, params: dict[str, Any]) -> list[tuple]:
    """Rows of plain SQL run on the driver connection under an SQLAlchemy connection, inside the
    transaction it has open (the quota's counts: no statement to build and compile per call)."""
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.execute(_marked(sql, _pyformat(conn.dialect)), params)
        return cur.fetchall()
    finally:
        cur.close()


def _bounded_count(conn, select_sql: str, params: dict[str, Any], bound: int | None) -> int:
    """COUNT(*) of ``select_sql``'s rows, stopping at ``bound`` (a LIMIT inside: the index walk
    ends there)."""
    if bound is None:
        return int(_on(conn, f"SELECT COUNT(*) FROM ({select_sql}) AS w", params)[0][0])
    return int(_on(conn, f"SELECT COUNT(*) FROM ({select_sql} LIMIT :bound) AS w", {**params, "bound": bound})[0][0])


def _count_active(conn, user_id: str, bound: int | None = None) -> int:
    # (user_id, status) alone: ix_tasks_user_status covers it
    return _bounded_count(conn, f"SELECT status FROM tasks WHERE user_id = :user_id AND status IN ({_ACTIVE_IN})",
                          {"user_id": user_id}, bound)


def _created_since(conn, user_id: str, since: float) -> list[float]:
    """Creation times of the user's videos since ``since``: a task of N variations counts N times."""
    rows = _on(conn, "SELECT created_at, n_variants FROM tasks WHERE user_id = :user_id AND created_at >= :since "
                     "ORDER BY created_at", {"user_id": user_id, "since": since})
    return [created for created, n in rows for _ in range(n or 1)]


def _daily(conn, user_id: str, since: float, limit: int) -> tuple[int, float | None]:
    """``(used, frees_at)`` of a rolling daily quota of ``limit`` videos: the videos the user's tasks
    created since ``since`` make (a task of N variations counts N), and the creation time whose
    ageing out frees a slot (the oldest while under the limit; None when there is none).

    Exactly what :func:`_created_since` gives, without reading the whole window: while the user is
    under the limit at most ``limit`` tasks are read (each counts at least once), on
    ix_tasks_user_created, so the cost is bounded by the limit, not by the user's history."""
    used, oldest = _on(conn, "SELECT COALESCE(SUM(n), 0), MIN(created_at) FROM (SELECT created_at, "
                             "COALESCE(NULLIF(n_variants, 0), 1) AS n FROM tasks WHERE user_id = :user_id "
                             "AND created_at >= :since ORDER BY created_at LIMIT :limit) AS w",
                       {"user_id": user_id, "since": since, "limit": max(limit, 1)})[0]
    if used < limit:
        return int(used), oldest
    # At or over the limit (rare: a full quota refuses before inserting more): the slot that frees
    # first so that used drops below the limit is the (used-limit+1)-th oldest video.
    times = _created_since(conn, user_id, since)
    return len(times), times[len(times) - limit] if times else None


def _count_queued(conn, bound: int | None = None) -> int:
    # ix_tasks_queue covers it
    return _bounded_count(conn, f"SELECT status FROM tasks WHERE status IN ({_WAITING_IN})", {}, bound)


def _queue_reaches(conn, limit: int) -> bool:
    """Whether ``limit`` or more tasks wait for a worker (the global queue limit).

    Counted on ix_tasks_queue, stopping at ``limit``. On SQLite a table holds no more rows than its
    rowids span, read in two index seeks: when the limit is above that, it cannot be reached and
    nothing is counted (a queue limit set above anything the store holds costs nothing per create)."""
    if conn.dialect.name == "sqlite":
        span = _on(conn, "SELECT (SELECT MAX(rowid) FROM tasks) - (SELECT MIN(rowid) FROM tasks) + 1", {})[0][0] or 0
        if span < limit:
            return False
    return _count_queued(conn, limit) >= limit


# Statements every create runs, built once (building and keying one costs more than running it).
_LOCK_USER = select(users.c.id).where(users.c.id == bindparam("user_id")).with_for_update()
_INSERT_TASK = insert(tasks)
_ADMIT = (update(tasks).where(tasks.c.id == bindparam("task_id"), tasks.c.status == "preprocessing")
          .values(status="queued"))


def _row(row) -> dict[str, Any] | None:
    return dict(row._mapping) if row is not None else None


def _token_row(user_id: str, now: float, ttl_seconds: float) -> dict[str, Any]:
    return {"id": new_id("tok"), "user_id": user_id, "created_at": now, "expires_at": now + ttl_seconds,
            "revoked_at": None}


#: the PostgreSQL channel a task becoming claimable is announced on (worker/listen.py wakes idle
#: workers of every machine with it, so they need not poll the queue often)
WORK_CHANNEL = "sorakit_work"


def _work_queued(conn) -> None:
    """Inside the transaction that makes a task claimable: on PostgreSQL, a notification that is
    delivered when (and only if) it commits."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {WORK_CHANNEL}")


def _task_ended(conn, task_id: str, status: str, now: float) -> None:
    """Every place a task ends calls this inside its transaction: the task's webhook
    deliveries commit with its status, or not at all."""
    webhooks.enqueue(conn, task_id, status, now)


class TtlCache:
    """A small cache of values believed for ``ttl`` seconds (monotonic time), dropped at once by
    :meth:`invalidate`. Take a :meth:`stamp` before reading a value and hand it to :meth:`put`: the
    value is then believed until ``ttl`` after its read *began* (however long the reading thread
    waited before putting it), and never if an invalidation came meanwhile."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl, self.size = ttl, size
        self.epoch = 0
        self._items: dict[Any, tuple[float, int, Any]] = {}

    def stamp(self) -> tuple[int, float]:
        return self.epoch, time.monotonic()

    def get(self, key: Any) -> Any | None:
        found = self._items.get(key)
        if found is None:
            return None
        deadline, epoch, value = found
        if epoch != self.epoch or time.monotonic() > deadline:
            self._items.pop(key, None)
            return None
        return value

    def put(self, key: Any, value: Any, stamp: tuple[int, float]) -> None:
        epoch, began = stamp
        if epoch != self.epoch:
            return  # invalidated while the value was being read
        if len(self._items) >= self.size:
            self._items.clear()
        self._items[key] = (began + self.ttl, epoch, value)

    def invalidate(self) -> None:
        self.epoch += 1
        self._items.clear()


class _Sql:
    """The hot reads as plain SQL with ``:name`` bound parameters, run on the driver's own
    connection: no statement building, compiling or result processing per call (SQLAlchemy Core
    costs ~10x the query itself there). Each statement is one SELECT, so it reads one snapshot
    without a transaction of its own. The text is plain SQL that SQLite and PostgreSQL both take;
    for a driver that wants ``%(name)s`` markers they are rewritten once, here.

    Values come back as SQLAlchemy would give them: JSON columns decoded, booleans as bool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.pyformat = _pyformat(engine.dialect)
        self.quote = engine.dialect.identifier_preparer.quote
        self._todo: dict[str, list[tuple[int, str, Callable[[Any], Any]]]] = {}
        # Only SQLite's driver hands JSON and booleans back as text and integers.
        self._convert: dict[str, Callable[[Any], Any]] = {}
        if self.sqlite:
            for table in (tasks, generations, tokens, users):
                for c in table.c:
                    if isinstance(c.type, JSON):
                        self._convert[c.name] = json.loads
                    elif isinstance(c.type, Boolean):
                        self._convert[c.name] = bool

    def columns(self, table: Table, alias: str = "", prefix: str = "", skip: tuple[str, ...] = ()) -> str:
        """A select list of ``table``'s columns (as schema.py has them), each ``prefix``-ed."""
        q = self.quote
        lead = f"{alias}." if alias else ""
        return ", ".join(f"{lead}{q(c.name)}" + (f" AS {q(prefix + c.name)}" if prefix else "")
                         for c in table.c if c.name not in skip)

    def text(self, sql: str) -> str:
        return _marked(sql, self.pyformat)

    def all(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            try:
                cur.execute(self.text(sql), params)
                names = [d[0] for d in cur.description]
                rows = cur.fetchall()
            finally:
                cur.close()
        finally:
            conn.close()  # back to the pool (which ends any transaction the driver began)
        todo = self._todo.get(sql)
        if todo is None:  # which columns need converting, by position: once per statement
            convert = self._convert
            todo = [(i, name, convert[name.partition("__")[2] or name]) for i, name in enumerate(names)
                    if (name.partition("__")[2] or name) in convert]
            if len(self._todo) < 1000:
                self._todo[sql] = todo
        out = []
        for row in rows:
            item = dict(zip(names, row))
            for i, name, fn in todo:
                if row[i] is not None:
                    item[name] = fn(row[i])
            out.append(item)
        return out

    def one(self, sql: str, params: dict[str, Any]) -> dict[str, Any] | None:
        found = self.all(sql, params)
        return found[0] if found else None


class Store:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self.sql = _Sql(engine)
        #: verified tokens with their user's row (server/auth.py); every change to tokens, users or
        #: sessions made through this store invalidates it
        self.auth_cache = TtlCache(AUTH_CACHE_SECONDS, AUTH_CACHE_SIZE)
        #: bumped by every change made here that can move a queued task forward (a claim, a
        #: cancel, a delete, a release): cached queue positions (server/shapes.py) are dropped then
        self.queue_epoch = 0
        self._lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._prepare_sql()

    def _prepare_sql(self) -> None:
        q, sql = self.sql.quote, self.sql
        t = q("tasks")
        listed = sql.columns(tasks, skip=("request",))  # the stored body is never shown
        active = ", ".join(f"'{s}'" for s in ACTIVE)
        # pending: two indexed reads in one statement (one snapshot): the unfinished tasks
        # (ix_tasks_user_status) and those finished since the cutoff (ix_tasks_user_finished).
        self._sql_active = f"SELECT {listed} FROM {t} WHERE user_id = :user_id AND status IN ({active})"
        self._sql_pending = (f"{self._sql_active} UNION ALL SELECT {listed} FROM {t} WHERE user_id = :user_id "
                             f"AND finished_at >= :cutoff AND status NOT IN ({active})")
        self._sql_task = f"SELECT {sql.columns(tasks)} FROM {t} WHERE id = :id"
        self._sql_task_of = f"{self._sql_task} AND user_id = :user_id"
        self._sql_token_user = (
            f"SELECT {sql.columns(tokens, 't')}, {sql.columns(users, 'u', 'u__')} FROM {q('tokens')} t "
            f"JOIN {q('users')} u ON u.id = t.user_id WHERE t.id = :id")
        self._sql_generations = f"SELECT {sql.columns(generations)} FROM {q('generations')} WHERE task_id IN "
        # a queued task's place: the queued tasks taken before it, and itself (ix_tasks_queue)
        # (a row-value range: only the index entries ahead of it are read)
        self._sql_position = (f"SELECT COUNT(*) AS n FROM {t} WHERE status = 'queued' "
                              f"AND (priority, created_at, id) <= (:priority, :created_at, :id)")

    def _auth_changed(self) -> None:
        self.auth_cache.invalidate()

    def _queue_changed(self) -> None:
        with self._lock:
            self.queue_epoch += 1

    # -- plumbing -------------------------------------------------------------------------
    @contextmanager
    def _begin(self):
        """A write transaction. This process's writers queue on a lock of ours first: SQLite lets
        one writer in at a time, and a thread refused by it sleeps in the busy handler (1, 2, 5, 10
        ms ...) however soon the lock frees, so threads contending there lose most of their time
        asleep. Other processes still queue in the busy handler."""
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    def _read(self):
        return self.engine.connect().execution_options(readonly=True)

    def _one(self, stmt) -> dict[str, Any] | None:
        with self._read() as conn:
            return _row(conn.execute(stmt).first())

    def _all(self, stmt) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def _write(self, stmt) -> int:
        with self._begin() as conn:
            return conn.execute(stmt).rowcount

    # -- users and tokens -----------------------------------------------------------------
    def create_user(self, name: str, concurrency: int | None = None, daily: int | None = None,
                    email: str | None = None) -> dict:
        row = {"id": new_id("user"), "name": name, "created_at": self.clock(),
               "concurrency_limit": concurrency, "daily_limit": daily, "email": email}
        try:
            self._write(insert(users).values(**row))
        except IntegrityError:
            raise NameTaken(name) from None
        return row

    def user(self, user_id: str) -> dict | None:
        return self._one(select(users).where(users.c.id == user_id))

    def user_by_name(self, name: str) -> dict | None:
        return self._one(select(users).where(users.c.name == name))

    def list_users(self) -> list[dict]:
        return self._all(select(users).order_by(users.c.created_at))

    def count_users(self) -> int:
        with self._read() as conn:
            return conn.execute(select(func.count()).select_from(users)).scalar_one()

    def create_token(self, user_id: str, ttl_seconds: float) -> dict:
        row = _token_row(user_id, self.clock(), ttl_seconds)
        self._write(insert(tokens).values(**row))
        return row

    def token(self, token_id: str) -> dict | None:
        return self._one(select(tokens).where(tokens.c.id == token_id))

    def token_user(self, token_id: str) -> tuple[dict, dict] | None:
        """A token's row and its user's, in one query (every request asks: plain SQL)."""
        row = self.sql.one(self._sql_token_user, {"id": token_id})
        if row is None:
            return None
        user = {k[3:]: row.pop(k) for k in list(row) if k.startswith("u__")}
        return row, user

    def revoke_token(self, token_id: str) -> bool:
        stmt = (update(tokens).where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=self.clock()))
        try:
            return self._write(stmt) == 1
        finally:
            self._auth_changed()

    # -- creating tasks -------------------------------------------------------------------
    def create_task(self, row: dict, idem_key: str | None = None, body_hash: str = "",
                    check: Callable[[Usage], None] | None = None,
                    replace_key: bool = False) -> tuple[dict, bool]:
        """Insert a task; with an idempotency key, return ``(original, True)`` on a replay.

        ``check`` sees the user's usage inside the inserting transaction and raises to refuse, so
        a quota decision holds for any number of processes: on SQLite the transaction holds the
        write lock from its first statement; elsewhere the user's row is locked first.
        ``replace_key``: the key is re-pointed at this new task instead of replaying an older one.
        """
        now = self.clock()
        with self._begin() as conn:
            conn.execute(_LOCK_USER, {"user_id": row["user_id"]})
            if idem_key and replace_key:
                conn.execute(delete(idempotency_keys).where(idempotency_keys.c.user_id == row["user_id"],
                                                            idempotency_keys.c.key == idem_key))
            elif idem_key:
                original = self._replay(conn, row["user_id"], idem_key, body_hash, now)
                if original:
                    return original, True
            if check is not None:
                check(Usage(conn, row["user_id"]))
            if idem_key:
                conn.execute(insert(idempotency_keys).values(
                    user_id=row["user_id"], key=idem_key, body_hash=body_hash,
                    task_id=row["id"], created_at=now))
            conn.execute(_INSERT_TASK, row)
        return row, False

    def replay(self, user_id: str, key: str, body_hash: str,
               window: float = IDEMPOTENCY_WINDOW) -> dict | None:
        """The task an idempotency key made within ``window`` seconds, if any (IdempotencyConflict
        on another body)."""
        with self._begin() as conn:
            return self._replay(conn, user_id, key, body_hash, self.clock(), window)

    def forget_key(self, user_id: str, key: str) -> None:
        self._write(delete(idempotency_keys).where(idempotency_keys.c.user_id == user_id,
                                                   idempotency_keys.c.key == key))

    def _replay(self, conn, user_id: str, key: str, body_hash: str, now: float,
                window: float = IDEMPOTENCY_WINDOW) -> dict | None:
        where = and_(idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key)
        found = _row(conn.execute(select(idempotency_keys).where(where)).first())
        if found is None:
            return None
        if found["created_at"] < now - window:
            conn.execute(delete(idempotency_keys).where(where))
            return None
        if found["body_hash"] != body_hash:
            raise IdempotencyConflict(key)
        return _row(conn.execute(select(tasks).where(tasks.c.id == found["task_id"])).first())

    def admit(self, task_id: str) -> bool:
        """preprocessing -> queued, once the request passed moderation."""
        with self._begin() as conn:
            admitted = conn.execute(_ADMIT, {"task_id": task_id}).rowcount == 1
            if admitted:
                _work_queued(conn)
            return admitted

    def preprocessing_ids(self) -> list[str]:
        return [r["id"] for r in self._all(select(tasks.c.id).where(tasks.c.status == "preprocessing"))]

    # -- reading tasks --------------------------------------------------------------------
    def task(self, task_id: str, user_id: str | None = None) -> dict | None:
        if user_id is None:
            return self.sql.one(self._sql_task, {"id": task_id})
        return self.sql.one(self._sql_task_of, {"id": task_id, "user_id": user_id})

    def pending(self, user_id: str, finished_window: float) -> list[dict]:
        """Unfinished tasks, plus those finished within the window; newest first.

        Two index searches (the unfinished; the finished since the cutoff), so the cost does not
        grow with the user's history."""
        if finished_window > 0:
            rows = self.sql.all(self._sql_pending, {"user_id": user_id,
                                                    "cutoff": self.clock() - finished_window})
        else:
            rows = self.sql.all(self._sql_active, {"user_id": user_id})
        rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return rows

    def count_active(self, user_id: str) -> int:
        with self._read() as conn:
            return _count_active(conn, user_id)

    def daily_usage(self, user_id: str, since: float, limit: int) -> tuple[int, float | None]:
        """``(used, frees_at)`` of the daily quota (see :func:`_daily`)."""
        with self._read() as conn:
            return _daily(conn, user_id, since, limit)

    def queue_position(self, task: dict) -> int | None:
        """A queued task's place in the queue now (1: next), counted on the claim index; None when
        it is not queued."""
        if task["status"] != "queued":
            return None
        found = self.sql.one(self._sql_position, {"priority": task["priority"],
                                                  "created_at": task["created_at"], "id": task["id"]})
        return int(found["n"]) or None

    def created_since(self, user_id: str, since: float) -> list[float]:
        """Creation times of the user's tasks since ``since``, oldest first (daily quota)."""
        with self._read() as conn:
            return _created_since(conn, user_id, since)

    def count_queued(self) -> int:
        with self._read() as conn:
            return _count_queued(conn)

    def queue_order(self) -> list[str]:
        """Ids of queued tasks in the order workers will take them."""
        stmt = (select(tasks.c.id).where(tasks.c.status == "queued")
                .order_by(tasks.c.priority, tasks.c.created_at, tasks.c.id))
        with self._read() as conn:
            return list(conn.execute(stmt).scalars())

    def recent_run_seconds(self, limit: int = 20) -> list[float]:
        stmt = (select(tasks.c.started_at, tasks.c.finished_at, tasks.c.n_frames)
                .where(tasks.c.status == "succeeded").order_by(tasks.c.finished_at.desc()).limit(limit))
        rows = self._all(stmt)
        return [(r["finished_at"] - r["started_at"]) / max(r["n_frames"], 1) for r in rows if r["started_at"]]

    # -- cancelling ------------------------------------------------------------------------
    def request_cancel(self, task_id: str, user_id: str) -> dict | None:
        """Cancel a queued task at once; flag a running one for its worker. Returns the task."""
        now = self.clock()
        with self._begin() as conn:
            mine = and_(tasks.c.id == task_id, tasks.c.user_id == user_id)
            if conn.execute(update(tasks).where(mine, tasks.c.status.in_(("preprocessing", "queued")))
                            .values(status="cancelled", failure_reason="task_cancelled", finished_at=now,
                                    progress=None)).rowcount:
                _task_ended(conn, task_id, "cancelled", now)
            conn.execute(update(tasks).where(mine, tasks.c.status.in_(("running", "processing")))
                         .values(cancel_requested=True))
            row = _row(conn.execute(select(tasks).where(mine)).first())
        self._queue_changed()
        return row

    # -- workers: claim, renew, progress, finish ------------------------------------------
    def claim(self, owner: str, lease_seconds: float, max_attempts: int,
              engines: Iterable[str] | None = None) -> Claim | None:
        """Take the next queued task, or one whose lease ran out (a crashed worker's).

        ``engines``: only tasks for these engine (or model) names, the ones this worker has; None
        takes any. On PostgreSQL the candidate rows are locked ``SKIP LOCKED``: claimers running at
        once each take a different task instead of queueing on the head of the queue."""
        now = self.clock()
        names = sorted(set(engines)) if engines is not None else None
        if names == []:
            return None
        with self._begin() as conn:
            self._fail_exhausted(conn, now, max_attempts)
            # Two index searches rather than one OR (which sorts every queued task): the head of
            # the queue (ix_tasks_queue, in its order), and the few tasks whose lease ran out.
            head = (select(tasks).where(tasks.c.status == "queued")
                    .order_by(tasks.c.priority, tasks.c.created_at, tasks.c.id).limit(1))
            # (few: at most the workers that died; read unordered, bounded, and the first by queue
            # order among them taken)
            lapsed = (select(tasks).where(tasks.c.status.in_(("running", "processing")),
                                          tasks.c.lease_expires < now).limit(16))
            if names is not None:
                head, lapsed = head.where(tasks.c.engine.in_(names)), lapsed.where(tasks.c.engine.in_(names))
            if conn.dialect.name == "postgresql":
                head, lapsed = head.with_for_update(skip_locked=True), lapsed.with_for_update(skip_locked=True)
            found = [dict(r._mapping) for r in conn.execute(head)]
            found += [dict(r._mapping) for r in conn.execute(lapsed)]
            if not found:
                return None
            row = min(found, key=lambda r: (r["priority"], r["created_at"], r["id"]))
            # A retaken task keeps the progress its dead attempt reached: progress never goes
            # backwards (the new attempt's bar stalls there until it passes it).
            progress = 0.0 if row["progress"] is None else row["progress"]
            values = {"status": "running", "lease_owner": owner, "lease_expires": now + lease_seconds,
                      "attempts": row["attempts"] + 1, "progress": progress,
                      "started_at": row["started_at"] or now}
            conn.execute(update(tasks).where(tasks.c.id == row["id"]).values(**values))
            row.update(values)
        self._queue_changed()
        return Claim(task=row, owner=owner)

    def _fail_exhausted(self, conn, now: float, max_attempts: int) -> None:
        """Give up tasks whose last allowed attempt died, each with a ``sora_error`` draft."""
        stale = and_(tasks.c.status.in_(("running", "processing")), tasks.c.lease_expires < now,
                     tasks.c.attempts >= max_attempts)
        reason = f"The task was interrupted {max_attempts} times and was given up."
        for row in conn.execute(select(tasks.c.id, tasks.c.user_id, tasks.c.prompt, tasks.c.title,
                                       tasks.c.width, tasks.c.height).where(stale)).all():
            # the stale condition again: a claimer in another process may have given it up first
            moved = conn.execute(update(tasks).where(tasks.c.id == row.id, stale).values(
                status="failed", failure_reason=reason, finished_at=now, lease_owner=None)).rowcount
            if not moved:
                continue
            _task_ended(conn, row.id, "failed", now)
            conn.execute(insert(generations).values(
                id=new_id("gen"), task_id=row.id, user_id=row.user_id, kind="sora_error", created_at=now,
                width=row.width, height=row.height, reason_str=reason, error_reason="attempts_exhausted",
                meta={"prompt": row.prompt, "title": row.title}))

    def _held(self, claim: Claim):
        return and_(tasks.c.id == claim.task["id"], tasks.c.lease_owner == claim.owner,
                    tasks.c.status.in_(("running", "processing")))

    def renew(self, claim: Claim, lease_seconds: float) -> tuple[bool, bool]:
        """Extend the lease; returns ``(still_held, cancel_requested)``."""
        with self._begin() as conn:
            held = conn.execute(update(tasks).where(self._held(claim))
                                .values(lease_expires=self.clock() + lease_seconds)).rowcount == 1
            flag = conn.execute(select(tasks.c.cancel_requested).where(tasks.c.id == claim.task["id"])).scalar()
        return held, bool(flag)

    def set_progress(self, claim: Claim, progress: float, status: str = "running") -> bool:
        stmt = update(tasks).where(self._held(claim)).values(progress=progress, status=status)
        return self._write(stmt) == 1

    def finish(self, claim: Claim, status: str, failure_reason: str | None = None,
               generation: dict | list[dict] | None = None) -> bool:
        """Record the outcome (and its drafts: one, or one per variation) atomically, only if the
        lease is still ours."""
        now = self.clock()
        with self._begin() as conn:
            # A failed or cancelled task keeps the progress it had reached: it shows where it stopped.
            progress = {"progress": 1.0} if status == "succeeded" else {}
            done = conn.execute(update(tasks).where(self._held(claim)).values(
                status=status, failure_reason=failure_reason, finished_at=now, lease_owner=None,
                lease_expires=None, **progress)).rowcount == 1
            rows = [generation] if isinstance(generation, dict) else generation or []
            if done and rows:
                conn.execute(insert(generations), rows)
            if done:
                _task_ended(conn, claim.task["id"], status, now)
        return done

    def release(self, claim: Claim) -> bool:
        """Hand a task back to the queue (graceful shutdown): this attempt does not count. Its
        progress stays, so the next attempt carries on from that mark (/v1 never goes back)."""
        stmt = update(tasks).where(self._held(claim)).values(
            status="queued", lease_owner=None, lease_expires=None, attempts=tasks.c.attempts - 1)
        try:
            with self._begin() as conn:
                released = conn.execute(stmt).rowcount == 1
                if released:
                    _work_queued(conn)
                return released
        finally:
            self._queue_changed()

    def fail_unclaimed(self, task_id: str, failure_reason: str, generation: dict | None = None) -> None:
        """Fail a task no worker holds (moderation at admission)."""
        now = self.clock()
        with self._begin() as conn:
            moved = conn.execute(update(tasks).where(tasks.c.id == task_id, tasks.c.status == "preprocessing")
                                 .values(status="failed", failure_reason=failure_reason,
                                         finished_at=now)).rowcount
            if moved and generation is not None:  # another process may have admitted it already
                conn.execute(insert(generations).values(**generation))
            if moved:
                _task_ended(conn, task_id, "failed", now)

    # -- uploads (image-to-video sources) ----------------------------------------------------
    def add_upload(self, row: dict, quota: int | None = None) -> tuple[bool, int]:
        """Insert an upload unless it takes its user's kept bytes over ``quota``.

        Returns ``(added, used)``, ``used`` being the user's bytes before this one. The sum and the
        insert share one write transaction (``BEGIN IMMEDIATE`` on SQLite; elsewhere the user's row
        is locked), so two processes cannot both take the last of a quota.
        """
        with self._begin() as conn:
            conn.execute(select(users.c.id).where(users.c.id == row["user_id"]).with_for_update())
            used = self._upload_bytes(conn, row["user_id"])
            if quota is not None and used + row["bytes"] > quota:
                return False, used
            conn.execute(insert(uploads).values(**row))
        return True, used

    @staticmethod
    def _upload_bytes(conn, user_id: str) -> int:
        stmt = select(func.coalesce(func.sum(uploads.c.bytes), 0)).where(uploads.c.user_id == user_id)
        return int(conn.execute(stmt).scalar_one())

    def upload_bytes(self, user_id: str) -> int:
        with self._read() as conn:
            return self._upload_bytes(conn, user_id)

    def uploads_of(self, user_id: str) -> list[dict]:
        """The user's uploads, newest first."""
        return self._all(select(uploads).where(uploads.c.user_id == user_id)
                         .order_by(uploads.c.created_at.desc(), uploads.c.id.desc()))

    def upload_files(self) -> set[str]:
        with self._read() as conn:
            return set(conn.execute(select(uploads.c.file)).scalars())

    @staticmethod
    def _needed_uploads(conn, user_id: str | None = None) -> dict[str, list[str]]:
        """Upload id -> ids of the unfinished tasks that name it (they read it when they run)."""
        stmt = select(tasks.c.id, tasks.c.inpaint_items).where(tasks.c.status.in_(ACTIVE))
        if user_id is not None:  # only its owner's tasks can name an upload
            stmt = stmt.where(tasks.c.user_id == user_id)
        needed: dict[str, list[str]] = {}
        for task_id, items in conn.execute(stmt):
            for item in items or []:
                if isinstance(item, dict) and item.get("upload_id"):
                    needed.setdefault(str(item["upload_id"]), []).append(task_id)
        return needed

    def delete_upload(self, upload_id: str, user_id: str) -> tuple[dict | None, list[str]]:
        """Delete the user's upload unless an unfinished task names it.

        Returns ``(row, needed_by)``: ``row`` is None when the user has no such upload; when
        ``needed_by`` (task ids) is not empty nothing was deleted.
        """
        with self._begin() as conn:
            mine = and_(uploads.c.id == upload_id, uploads.c.user_id == user_id)
            row = _row(conn.execute(select(uploads).where(mine)).first())
            if row is None:
                return None, []
            needed_by = self._needed_uploads(conn, user_id).get(upload_id, [])
            if not needed_by:
                conn.execute(delete(uploads).where(mine))
            return row, needed_by

    def delete_uploads_before(self, before: float) -> list[dict]:
        """Delete uploads created before ``before`` that no unfinished task names; returns them."""
        with self._begin() as conn:
            stmt = select(uploads).where(uploads.c.created_at < before)
            old = [dict(r._mapping) for r in conn.execute(stmt)]
            needed = self._needed_uploads(conn)
            gone = [r for r in old if r["id"] not in needed]
            if gone:
                conn.execute(delete(uploads).where(uploads.c.id.in_([r["id"] for r in gone])))
            return gone

    def upload(self, upload_id: str, user_id: str | None = None) -> dict | None:
        stmt = select(uploads).where(uploads.c.id == upload_id)
        if user_id is not None:
            stmt = stmt.where(uploads.c.user_id == user_id)
        return self._one(stmt)

    # -- generations (drafts) -------------------------------------------------------------
    def generations_for(self, task_ids: Iterable[str]) -> dict[str, list[dict]]:
        ids = list(task_ids)
        found: dict[str, list[dict]] = {i: [] for i in ids}
        if ids:  # every listing asks: plain SQL, one bound parameter per id (ix_generations_task)
            marks = ", ".join(f":t{i}" for i in range(len(ids)))
            rows = self.sql.all(f"{self._sql_generations}({marks})", {f"t{i}": v for i, v in enumerate(ids)})
            rows.sort(key=lambda r: r["created_at"])  # stable: ties keep the database's order
            for row in rows:
                found[row["task_id"]].append(row)
        return found

    def generation(self, gen_id: str, user_id: str | None = None) -> dict | None:
        stmt = select(generations).where(generations.c.id == gen_id)
        if user_id is not None:
            stmt = stmt.where(generations.c.user_id == user_id)
        return self._one(stmt)

    def drafts(self, user_id: str, limit: int, after: tuple[float, str] | None = None) -> list[dict]:
        """Newest first; ``after`` is the (created_at, id) of the last item of the previous page."""
        stmt = select(generations).where(generations.c.user_id == user_id)
        if after is not None:
            created, gen_id = after
            stmt = stmt.where(or_(generations.c.created_at < created,
                                  and_(generations.c.created_at == created, generations.c.id < gen_id)))
        stmt = stmt.order_by(generations.c.created_at.desc(), generations.c.id.desc()).limit(limit)
        return self._all(stmt)

    def delete_generation(self, gen_id: str, user_id: str) -> dict | None:
        with self._begin() as conn:
            mine = and_(generations.c.id == gen_id, generations.c.user_id == user_id)
            # locked: a post being made of it (which reads it FOR SHARE) waits, then finds it gone
            row = _row(conn.execute(select(generations).where(mine).with_for_update()).first())
            if row is not None:
                conn.execute(delete(posts).where(posts.c.generation_id == gen_id))  # its shares go with it
                conn.execute(delete(generations).where(mine))
            return row

    def held_task_ids(self) -> set[str]:
        """Tasks some worker runs (their temp files may be live). Judged by status, not by the
        lease: a worker whose lease lapsed for a moment (a busy database) still writes there."""
        stmt = select(tasks.c.id).where(tasks.c.status.in_(("running", "processing")))
        with self._read() as conn:
            return set(conn.execute(stmt).scalars())

    # -- the official API's view: every task is a video -----------------------------------
    def tasks_page(self, user_id: str, limit: int, newest_first: bool = True,
                   after: tuple[float, str] | None = None) -> list[dict]:
        """The user's tasks by creation time; ``after`` is the (created_at, id) of the last one seen."""
        listed = [c for c in tasks.c if c.name != "request"]
        stmt = select(*listed).where(tasks.c.user_id == user_id)
        if after is not None:
            created, last_id = after
            before = (tasks.c.created_at < created) if newest_first else (tasks.c.created_at > created)
            tie = (tasks.c.id < last_id) if newest_first else (tasks.c.id > last_id)
            stmt = stmt.where(or_(before, and_(tasks.c.created_at == created, tie)))
        order = (tasks.c.created_at.desc(), tasks.c.id.desc()) if newest_first else (tasks.c.created_at, tasks.c.id)
        return self._all(stmt.order_by(*order).limit(limit))

    def delete_task(self, task_id: str, user_id: str) -> list[dict] | None:
        """Delete a task with its drafts and keys; returns the drafts (their files are the caller's
        to remove), or None when the user has no such task. A running task's worker then finds its
        lease gone, stops, and records nothing."""
        with self._begin() as conn:
            mine = and_(tasks.c.id == task_id, tasks.c.user_id == user_id)
            # locked first: a worker committing its result waits (then finds its lease gone), so no
            # draft of it appears between reading the drafts and deleting the task
            if conn.execute(select(tasks.c.id).where(mine).with_for_update()).first() is None:
                return None
            gens = [dict(r._mapping) for r in conn.execute(select(generations).where(
                generations.c.task_id == task_id))]
            conn.execute(delete(posts).where(posts.c.generation_id.in_([g["id"] for g in gens])))
            conn.execute(delete(generations).where(generations.c.task_id == task_id))
            conn.execute(delete(idempotency_keys).where(idempotency_keys.c.task_id == task_id))
            conn.execute(delete(tasks).where(mine))
        self._queue_changed()
        return gens

    # -- retention ------------------------------------------------------------------------
    def prune(self, finished_before: float) -> tuple[int, int]:
        """Delete finished tasks older than ``finished_before`` that no draft needs, and
        idempotency keys past their window; returns ``(tasks, keys)`` deleted."""
        now = self.clock()
        has_draft = select(generations.c.id).where(generations.c.task_id == tasks.c.id).exists()
        old = and_(tasks.c.status.in_(TERMINAL), tasks.c.finished_at < finished_before, ~has_draft)
        with self._begin() as conn:
            keys = conn.execute(delete(idempotency_keys).where(
                idempotency_keys.c.created_at < now - IDEMPOTENCY_WINDOW)).rowcount
            # A key naming a task we are about to delete goes too (it could only replay a 404).
            doomed = select(tasks.c.id).where(old)
            keys += conn.execute(delete(idempotency_keys).where(idempotency_keys.c.task_id.in_(doomed))).rowcount
            removed = conn.execute(delete(tasks).where(old)).rowcount
        return removed, keys

    def known_generation_ids(self) -> set[str]:
        with self._read() as conn:
            return set(conn.execute(select(generations.c.id)).scalars())

    # -- sessions and passwords (web sign-in) ---------------------------------------------
    def set_password(self, user_id: str, password_hash: str, only_if_unset: bool = False) -> int:
        """Set a user's password hash; their sessions end (a new password signs every browser
        out). Returns how many ended. ``only_if_unset``: only when the user has none yet (two
        servers giving a first password at once: the first one's stays); -1 when it had one."""
        try:
            with self._begin() as conn:
                mine = users.c.id == user_id
                if only_if_unset:
                    mine = and_(mine, users.c.password_hash.is_(None))
                if conn.execute(update(users).where(mine).values(password_hash=password_hash)).rowcount == 0 \
                        and only_if_unset:
                    return -1
                return self._end_sessions(conn, sessions.c.user_id == user_id)
        finally:
            self._auth_changed()

    def set_disabled(self, user_id: str, disabled: bool) -> int:
        """Disable (their sessions end with it; returns how many) or enable a user. While disabled,
        every token of theirs is refused (server/auth.py reads ``disabled_at``)."""
        try:
            with self._begin() as conn:
                if not disabled:
                    conn.execute(update(users).where(users.c.id == user_id).values(disabled_at=None))
                    return 0
                conn.execute(update(users).where(users.c.id == user_id, users.c.disabled_at.is_(None))
                             .values(disabled_at=self.clock()))
                return self._end_sessions(conn, sessions.c.user_id == user_id)
        finally:
            self._auth_changed()

    def _end_sessions(self, conn, which) -> int:
        """End the sessions ``which`` selects and revoke the tokens minted for them."""
        now = self.clock()
        live = and_(which, sessions.c.ended_at.is_(None))
        minted = select(sessions.c.access_token_id).where(live)
        conn.execute(update(tokens).where(tokens.c.id.in_(minted), tokens.c.revoked_at.is_(None))
                     .values(revoked_at=now))
        return conn.execute(update(sessions).where(live).values(ended_at=now)).rowcount

    def create_session(self, user_id: str, token_hash: str, ttl_seconds: float) -> tuple[dict, dict]:
        """A session and the bearer token minted for it, one expiry for both, in one transaction.
        The user's sessions that can no longer be used are dropped meanwhile, so rows do not pile up."""
        now = self.clock()
        token = _token_row(user_id, now, ttl_seconds)
        row = {"id": new_id("sess"), "user_id": user_id, "token_hash": token_hash, "created_at": now,
               "expires_at": token["expires_at"], "ended_at": None, "access_token_id": token["id"]}
        with self._begin() as conn:
            conn.execute(delete(sessions).where(sessions.c.user_id == user_id, or_(
                sessions.c.ended_at.is_not(None), sessions.c.expires_at < now)))
            conn.execute(insert(tokens).values(**token))
            conn.execute(insert(sessions).values(**row))
        return row, token

    def session_by_hash(self, token_hash: str) -> tuple[dict, dict, dict] | None:
        """A session with its user's row and its token's, in one query (every page load asks)."""
        stmt = (select(sessions, *[c.label(f"u__{c.name}") for c in users.c],
                       *[c.label(f"t__{c.name}") for c in tokens.c])
                .join(users, users.c.id == sessions.c.user_id)
                .join(tokens, tokens.c.id == sessions.c.access_token_id)
                .where(sessions.c.token_hash == token_hash))
        row = self._one(stmt)
        if row is None:
            return None
        user = {k[3:]: row.pop(k) for k in list(row) if k.startswith("u__")}
        token = {k[3:]: row.pop(k) for k in list(row) if k.startswith("t__")}
        return row, user, token

    def end_session(self, session_id: str) -> bool:
        try:
            with self._begin() as conn:
                return self._end_sessions(conn, sessions.c.id == session_id) == 1
        finally:
            self._auth_changed()

    def change_signin_failures(self, keys: list[str], change: Callable[[dict, float], dict],
                               window: float) -> None:
        """Hand the failure rows of ``keys`` (None where absent) to ``change`` and write back the
        rows it returns (None deletes one), in one write transaction: processes signing in at once
        then count every attempt. ``change`` may raise to refuse; nothing is written then.
        Rows idle for ``window`` seconds (no failure began, no lock ended) are forgotten first."""
        now = self.clock()
        idle = and_(signin_failures.c.first_at < now - window,
                    or_(signin_failures.c.locked_until.is_(None),
                        signin_failures.c.locked_until < now - window))
        with self._begin() as conn:
            if conn.dialect.name == "postgresql":
                # SQLite's write lock serialises these; on PostgreSQL two nodes counting one key at
                # once would both insert its row: the keys are locked, in one order, first
                for key in sorted(set(keys)):
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, 7))", {"k": key})
            conn.execute(delete(signin_failures).where(idle))
            found = {r.key: dict(r._mapping) for r in conn.execute(
                select(signin_failures).where(signin_failures.c.key.in_(keys)))}
            for key, row in change({k: found.get(k) for k in keys}, now).items():
                conn.execute(delete(signin_failures).where(signin_failures.c.key == key))
                if row is not None:
                    conn.execute(insert(signin_failures).values(**{**row, "key": key}))

    # -- the fleet: workers and what they run ------------------------------------------------
    def register_worker(self, row: dict) -> None:
        """Record a worker starting (a restarted worker of the same name takes its row over)."""
        now = self.clock()
        values = {**row, "started_at": now, "last_seen": now, "stopped_at": None, "current_task": None,
                  "tasks_done": 0}
        with self._begin() as conn:
            conn.execute(delete(workers).where(workers.c.name == row["name"]))
            conn.execute(insert(workers).values(**values))

    def worker_seen(self, name: str, current_task: str | None = None, done: int = 0) -> bool:
        """A worker's heartbeat, with the task it runs now; ``done`` adds to its finished count."""
        stmt = (update(workers).where(workers.c.name == name)
                .values(last_seen=self.clock(), current_task=current_task,
                        tasks_done=workers.c.tasks_done + done))
        return self._write(stmt) == 1

    def worker_stopped(self, name: str) -> None:
        now = self.clock()
        self._write(update(workers).where(workers.c.name == name)
                    .values(stopped_at=now, last_seen=now, current_task=None))

    def workers(self) -> list[dict]:
        """Every worker row, most recently seen first."""
        return self._all(select(workers).order_by(workers.c.last_seen.desc(), workers.c.name))

    def count_alive_workers(self, seen_since: float) -> int:
        """Workers not stopped whose heartbeat is newer than ``seen_since`` (queue estimates)."""
        with self._read() as conn:
            return conn.execute(select(func.count()).select_from(workers).where(
                workers.c.stopped_at.is_(None), workers.c.last_seen >= seen_since)).scalar_one()

    def forget_workers(self, seen_before: float) -> int:
        """Drop the rows of workers not seen since ``seen_before`` (maintenance)."""
        return self._write(delete(workers).where(workers.c.last_seen < seen_before))

    def shared_value(self, name: str, make: Callable[[], str]) -> str:
        """A value every node of this database agrees on: the first node to ask stores ``make()``,
        every later one reads it (a race between two first nodes keeps one)."""
        found = self._one(select(shared_values.c.value).where(shared_values.c.name == name))
        if found is not None:
            return found["value"]
        try:
            self._write(insert(shared_values).values(name=name, value=make(), created_at=self.clock()))
        except IntegrityError:
            pass  # another node stored it first
        return self._one(select(shared_values.c.value).where(shared_values.c.name == name))["value"]
