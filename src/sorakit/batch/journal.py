"""The batch journal: a local SQLite file (stdlib ``sqlite3``, WAL) that makes a batch resumable.

One entry per input row, keyed by the row's index and a hash of its content. Every state is
written (and committed) *before* the action it announces:

    pending -> submitting (Idempotency-Key chosen and stored) -> submitted (task id stored)
            -> done (output path + sha256) | failed (reason)

so a process killed at any instant leaves a journal from which the next run knows, for every
row, whether it may have been sent (resend with the same key), was sent (follow the task), or
finished. An ``events`` table keeps every transition, for people and tests.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .rows import Row

STATES = ("pending", "submitting", "submitted", "done", "failed")
UNFINISHED = ("pending", "submitting", "submitted")
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS rows (
    idx INTEGER NOT NULL,
    hash TEXT NOT NULL,
    line INTEGER,
    prompt TEXT NOT NULL,
    fields TEXT NOT NULL DEFAULT '{}',
    template TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    idem_key TEXT,
    body TEXT,
    task_id TEXT,
    gen_id TEXT,
    task_status TEXT,
    progress REAL,
    output TEXT,
    sha256 TEXT,
    reason TEXT,
    submitted_at REAL,
    updated_at REAL,
    PRIMARY KEY (idx, hash)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    idx INTEGER NOT NULL,
    hash TEXT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    task_status TEXT,
    detail TEXT
);
"""


class JournalError(RuntimeError):
    """The journal cannot be used (another batch holds it, or it is not a journal)."""


@dataclass
class Entry:
    """One input row and what has been done about it."""

    idx: int
    hash: str
    prompt: str
    line: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    state: str = "pending"
    idem_key: str | None = None
    body: dict[str, Any] | None = None  # the exact create body sent under idem_key
    task_id: str | None = None
    gen_id: str | None = None
    task_status: str | None = None
    progress: float | None = None
    output: str | None = None
    sha256: str | None = None
    reason: str | None = None
    submitted_at: float | None = None
    updated_at: float | None = None

    @property
    def key(self) -> tuple[int, str]:
        return self.idx, self.hash

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


_COLUMNS = [f.name for f in fields(Entry)]
_JSON = ("fields", "body")


def _to_db(entry: Entry) -> dict[str, Any]:
    data = {name: getattr(entry, name) for name in _COLUMNS}
    for name in _JSON:
        data[name] = None if data[name] is None else json.dumps(data[name], sort_keys=True)
    return data


def _from_db(row: sqlite3.Row) -> Entry:
    data = {name: row[name] for name in _COLUMNS}
    for name in _JSON:
        data[name] = None if data[name] is None else json.loads(data[name])
    data["fields"] = data["fields"] or {}
    return Entry(**data)


class _FileLock:
    """An exclusive advisory lock next to the journal; the OS drops it when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; one batch per journal is on the user
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JournalError(f"another sorakit batch is using this journal ({self.path.with_suffix('')}); "
                               "wait for it to finish") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Journal:
    """The journal of one batch. ``sync(rows)`` matches the input file to what is recorded."""

    def __init__(self, path: str | Path, *, lock: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _FileLock(self.path.with_name(self.path.name + ".lock")) if lock else None
        if self._lock:
            self._lock.acquire()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise JournalError(f"{self.path} is not a usable batch journal: {exc}") from None
        self.entries: list[Entry] = []  # the current input's rows, in file order

    def _check_version(self) -> None:
        found = self.get_meta("schema_version")
        if found is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(found) > SCHEMA_VERSION:
            raise JournalError(f"{self.path} was written by a newer sorakit (journal version {found})")

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None
        if self._lock:
            self._lock.release()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- reading ----------------------------------------------------------------------------
    def recorded(self) -> list[Entry]:
        """Every entry ever written, the current input's or not, by index."""
        return [_from_db(r) for r in self._db.execute("SELECT * FROM rows ORDER BY idx, hash")]

    def events(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute("SELECT * FROM events ORDER BY id")]

    def counts(self) -> dict[str, int]:
        found = dict.fromkeys(STATES, 0)
        for entry in self.entries:
            found[entry.state] += 1
        return found

    # -- matching the input -------------------------------------------------------------------
    def sync(self, rows: Iterable[Row]) -> list[str]:
        """Match input rows to recorded entries by (index, content hash); returns warnings.

        A row whose content moved to another index keeps its entry (and its progress). A row
        whose content changed is a new row; the old entry is kept but no longer followed.
        """
        rows = list(rows)
        recorded = {e.key: e for e in self.recorded()}
        matched: dict[int, Entry] = {}
        for row in rows:
            if (row.index, row.content_hash) in recorded:
                matched[row.index] = recorded.pop((row.index, row.content_hash))
        warnings = self._adopt_moved(rows, matched, recorded)
        by_index = {e.idx: e for e in recorded.values()}
        fresh = []
        for row in rows:
            if row.index in matched:
                self._refresh_row(matched[row.index], row)
                continue
            old = by_index.get(row.index)
            if old is not None:
                warnings.append(f"row {row.index} (line {row.line}) changed since the journal was written "
                                f"(was {excerpt(old.prompt)!r}, {_status_words(old)}); it is treated as a new row")
            fresh.append(row)
        matched.update((e.idx, e) for e in self._insert(fresh))
        stale = [e for e in recorded.values() if e.key not in {m.key for m in matched.values()}]
        in_flight = [e for e in stale if e.state in ("submitting", "submitted")]
        if stale:
            warnings.append(f"{len(stale)} journal row(s) no longer match the input file and are ignored"
                            + (f"; still unfinished there: {', '.join(_status_words(e) for e in in_flight)}"
                               if in_flight else ""))
        self.entries = [matched[row.index] for row in rows]
        return warnings

    def _adopt_moved(self, rows: list[Row], matched: dict[int, Entry],
                     recorded: dict[tuple[int, str], Entry]) -> list[str]:
        warnings = []
        for row in rows:
            if row.index in matched:
                continue
            same = [e for e in recorded.values() if e.hash == row.content_hash]
            if not same:
                continue
            entry = min(same, key=lambda e: abs(e.idx - row.index))
            del recorded[entry.key]
            warnings.append(f"row {row.index} (line {row.line}) was row {entry.idx} when the journal was "
                            f"written; its progress ({entry.state}) is kept")
            self._db.execute("UPDATE rows SET idx = ? WHERE idx = ? AND hash = ?",
                             (row.index, entry.idx, entry.hash))
            entry.idx = row.index
            matched[row.index] = entry
        return warnings

    def _refresh_row(self, entry: Entry, row: Row) -> None:
        if entry.line != row.line:
            entry.line = row.line
            self._db.execute("UPDATE rows SET line = ? WHERE idx = ? AND hash = ?", (row.line, *entry.key))

    def _insert(self, rows: list[Row]) -> list[Entry]:
        """New rows, pending, in one transaction (one sync to disk for a file of thousands)."""
        entries = [Entry(idx=row.index, hash=row.content_hash, prompt=row.prompt, line=row.line,
                         fields=dict(row.fields), template=row.output, updated_at=time.time()) for row in rows]
        if not entries:
            return entries
        names = ", ".join(_COLUMNS)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for entry in entries:
                self._db.execute(f"INSERT INTO rows ({names}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                                 tuple(_to_db(entry).values()))
                self._event(entry, "pending", "new row")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return entries

    # -- writing ----------------------------------------------------------------------------
    def update(self, entry: Entry, detail: str | None = None, **changes: Any) -> Entry:
        """Write ``changes`` to the entry (one committed transaction), then apply them in memory."""
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise TypeError(f"unknown journal columns {sorted(unknown)}")
        if changes.get("state", entry.state) not in STATES:
            raise ValueError(f"unknown state {changes['state']!r}")
        new = replace(entry, **changes, updated_at=time.time())
        data = {k: v for k, v in _to_db(new).items() if k in changes or k == "updated_at"}
        assignments = ", ".join(f"{k} = ?" for k in data)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(f"UPDATE rows SET {assignments} WHERE idx = ? AND hash = ?",
                             (*data.values(), *entry.key))
            if "state" in changes or "task_status" in changes or detail:
                self._event(new, new.state, detail)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for name in (*changes, "updated_at"):
            setattr(entry, name, getattr(new, name))
        return entry

    def _event(self, entry: Entry, state: str, detail: str | None) -> None:
        self._db.execute("INSERT INTO events (at, idx, hash, state, task_id, task_status, detail) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (time.time(), entry.idx, entry.hash, state, entry.task_id, entry.task_status, detail))


def excerpt(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status_words(entry: Entry) -> str:
    return f"row {entry.idx} {entry.state}" + (f" as {entry.task_id}" if entry.task_id else "")
