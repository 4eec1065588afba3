"""Webhook endpoints and their deliveries: the SQL behind ``sorakit webhooks`` and the sender.

A task's end queues its events inside the transaction that ends it (:func:`enqueue`), so a crash
can never lose an event, nor send one for a change that rolled back. The sender takes due rows
with a conditional UPDATE, as workers take tasks, so several server processes can share one
database; a claim pushes ``next_attempt_at`` past the send's timeout, which makes it a lease.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Collection, Iterable

from sqlalchemy import Engine, delete, event, func, insert, select, update

from ..ids import new_id, video_id
from .schema import tasks, users, webhook_deliveries, webhook_endpoints

EVENTS = ("video.completed", "video.failed")
#: set on a connection by :func:`enqueue`; read after its transaction by :func:`notify_on_commit`
_QUEUED = "sorakit.webhooks.queued"

deliveries, endpoints = webhook_deliveries, webhook_endpoints


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def event_type(status: str) -> str:
    """The event of a terminal status: only success completes, cancel counts as a failure."""
    return "video.completed" if status == "succeeded" else "video.failed"


def event_body(event_id: str, kind: str, created_at: float, task_id: str) -> str:
    body = {"id": event_id, "object": "event", "created_at": int(created_at), "type": kind,
            "data": {"id": video_id(task_id)}}
    return json.dumps(body, separators=(",", ":"))


def enqueue(conn, task_id: str, status: str, now: float) -> int:
    """Queue the event of a task that just ended, one delivery per endpoint of its owner that
    subscribes to it; call inside the transaction that ended it. Returns the deliveries queued."""
    kind = event_type(status)
    owner = select(tasks.c.user_id).where(tasks.c.id == task_id).scalar_subquery()
    # FOR SHARE (PostgreSQL): an endpoint being removed meanwhile either waits for this commit
    # (and then removes these deliveries too) or is gone before it is read: never a delivery
    # naming a removed endpoint, which would fail the task's commit
    subscribed = [r.id for r in conn.execute(select(endpoints.c.id, endpoints.c.events)
                                             .where(endpoints.c.user_id == owner).with_for_update(read=True))
                  if kind in r.events]
    if not subscribed:
        return 0
    event_id = new_id("evt")
    body = event_body(event_id, kind, now, task_id)
    conn.execute(insert(deliveries), [
        {"id": new_id("whd"), "event_id": event_id, "endpoint_id": endpoint_id, "task_id": task_id,
         "event_type": kind, "payload": body, "status": "pending", "created_at": now,
         "next_attempt_at": now, "attempts": 0} for endpoint_id in subscribed])
    conn.info[_QUEUED] = True
    return len(subscribed)


def notify_on_commit(engine: Engine, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` once a transaction that queued deliveries is over; returns an undo.

    Called when the connection goes back to the pool, that is after the commit: SQLAlchemy's own
    ``commit`` event fires before the commit, when a woken sender could not see the rows yet.
    """
    def checked_in(_dbapi_conn, record) -> None:
        if record.info.pop(_QUEUED, False):
            callback()

    def rolled_back(conn) -> None:
        conn.info.pop(_QUEUED, None)  # nothing was queued after all

    event.listen(engine, "rollback", rolled_back)
    event.listen(engine, "checkin", checked_in)

    def undo() -> None:
        event.remove(engine, "rollback", rolled_back)
        event.remove(engine, "checkin", checked_in)

    return undo


class WebhookStore:
    """Endpoints (the operator's commands) and deliveries (the sender's claims and results)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine, self.clock = engine, clock

    # -- endpoints ------------------------------------------------------------------------
    def add_endpoint(self, user_id: str, url: str, events: Iterable[str] = EVENTS) -> dict:
        row = {"id": new_id("wh"), "user_id": user_id, "url": url, "secret": new_secret(),
               "events": list(events), "created_at": self.clock()}
        with self.engine.begin() as conn:
            conn.execute(insert(endpoints).values(**row))
        return row

    def endpoints(self, user_id: str | None = None) -> list[dict]:
        """Endpoints, oldest first, with the owner's name and counts of deliveries by status."""
        stmt = (select(endpoints, users.c.name.label("user_name"))
                .join(users, users.c.id == endpoints.c.user_id).order_by(endpoints.c.created_at))
        if user_id is not None:
            stmt = stmt.where(endpoints.c.user_id == user_id)
        counts = (select(deliveries.c.endpoint_id, deliveries.c.status, func.count())
                  .group_by(deliveries.c.endpoint_id, deliveries.c.status))
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
            tally = {(e, s): n for e, s, n in conn.execute(counts)}
        for row in rows:
            row["counts"] = {s: tally.get((row["id"], s), 0) for s in ("delivered", "pending", "failed")}
        return rows

    def remove_endpoint(self, endpoint_id: str) -> bool:
        """Delete an endpoint with its deliveries: pending ones are never sent."""
        with self.engine.begin() as conn:
            # locked first: a task ending now queues its delivery before this, or not at all
            conn.execute(select(endpoints.c.id).where(endpoints.c.id == endpoint_id).with_for_update())
            conn.execute(delete(deliveries).where(deliveries.c.endpoint_id == endpoint_id))
            return conn.execute(delete(endpoints).where(endpoints.c.id == endpoint_id)).rowcount == 1

    # -- deliveries -----------------------------------------------------------------------
    def claim(self, owner: str, limit: int, lease: float, busy: Collection[str] = ()) -> list[dict]:
        """Lease up to ``limit`` due deliveries, the oldest of each endpoint not in ``busy``, one
        per endpoint: a receiver that hangs then holds one sender, never all of them."""
        now = self.clock()
        with self.engine.begin() as conn:
            taken = [d for e in self._due_endpoints(conn, now, limit, busy)
                     if (d := self._take_oldest(conn, e, owner, now, lease))]
            if not taken:
                return []
            stmt = (select(deliveries, endpoints.c.url, endpoints.c.secret)
                    .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
                    .where(deliveries.c.id.in_(taken)).order_by(deliveries.c.created_at))
            return [dict(r._mapping) for r in conn.execute(stmt)]

    @staticmethod
    def _due(now: float, busy: Collection[str] = ()):
        clauses = [deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now]
        if busy:
            clauses.append(deliveries.c.endpoint_id.not_in(list(busy)))
        return clauses

    def _due_endpoints(self, conn, now: float, limit: int, busy: Collection[str]) -> list[str]:
        first = func.min(deliveries.c.next_attempt_at)
        stmt = (select(deliveries.c.endpoint_id).where(*self._due(now, busy))
                .group_by(deliveries.c.endpoint_id).order_by(first).limit(limit))
        return list(conn.execute(stmt).scalars())

    def _take_oldest(self, conn, endpoint_id: str, owner: str, now: float, lease: float) -> str | None:
        oldest = conn.execute(select(deliveries.c.id).where(deliveries.c.endpoint_id == endpoint_id,
                                                            *self._due(now))
                              .order_by(deliveries.c.next_attempt_at, deliveries.c.id).limit(1)).scalar()
        if oldest is None:
            return None
        # conditional, so another process that took it first wins and we skip it
        won = conn.execute(update(deliveries).where(deliveries.c.id == oldest, *self._due(now)).values(
            lease_owner=owner, next_attempt_at=now + lease, attempts=deliveries.c.attempts + 1)).rowcount
        return oldest if won == 1 else None

    def mark_delivered(self, delivery_id: str, status_code: int) -> bool:
        """A 2xx: delivered for good, even if our lease ran out meanwhile (never sent again)."""
        stmt = (update(deliveries).where(deliveries.c.id == delivery_id, deliveries.c.status == "pending")
                .values(status="delivered", delivered_at=self.clock(), last_status=status_code,
                        last_error=None, lease_owner=None))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def mark_failed(self, delivery_id: str, owner: str, status_code: int | None, error: str,
                    retry_at: float | None) -> bool:
        """A failed attempt: due again at ``retry_at``, or given up for good when it is None."""
        done = {"status": "failed"} if retry_at is None else {"next_attempt_at": retry_at}
        stmt = (update(deliveries).where(deliveries.c.id == delivery_id, deliveries.c.lease_owner == owner,
                                         deliveries.c.status == "pending")
                .values(last_status=status_code, last_error=error, lease_owner=None, **done))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def release(self, owner: str, delivery_ids: Collection[str]) -> int:
        """Hand back deliveries a stopping sender still holds: due at once, the attempt uncounted."""
        if not delivery_ids:
            return 0
        stmt = (update(deliveries).where(deliveries.c.id.in_(list(delivery_ids)),
                                         deliveries.c.lease_owner == owner, deliveries.c.status == "pending")
                .values(lease_owner=None, next_attempt_at=self.clock(), attempts=deliveries.c.attempts - 1))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    def next_due(self, busy: Collection[str] = ()) -> float | None:
        """When the next pending delivery of an endpoint not in ``busy`` falls due."""
        clauses = [deliveries.c.status == "pending"]
        if busy:
            clauses.append(deliveries.c.endpoint_id.not_in(list(busy)))
        stmt = select(func.min(deliveries.c.next_attempt_at)).where(*clauses)
        with self.engine.connect().execution_options(readonly=True) as conn:
            return conn.execute(stmt).scalar()

    def deliveries(self, endpoint_id: str | None = None) -> list[dict]:
        stmt = select(deliveries).order_by(deliveries.c.created_at, deliveries.c.id)
        if endpoint_id is not None:
            stmt = stmt.where(deliveries.c.endpoint_id == endpoint_id)
        with self.engine.connect().execution_options(readonly=True) as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def prune(self, finished_before: float) -> int:
        """Forget delivered and given-up deliveries created before ``finished_before``."""
        stmt = delete(deliveries).where(deliveries.c.status.in_(("delivered", "failed")),
                                        deliveries.c.created_at < finished_before)
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount
