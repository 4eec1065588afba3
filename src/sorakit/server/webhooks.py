"""Sends webhook deliveries: signed POSTs, retried with backoff for about a day.

The events were queued in the database by the transactions that ended their tasks
(``store/webhooks.py``); this module only posts them. One dispatcher thread claims due deliveries
under a lease and hands them to a few sender threads, at most one per endpoint at a time, so a
receiver that hangs holds one sender and delays nobody else. Workers and requests never wait on a
receiver. The schedule lives in the database, so retries survive restarts, and claims are
conditional updates, so several server processes can share the table.

Signatures follow Standard Webhooks, as the official platform sent them: ``webhook-id`` (the event
id, the same on every retry), ``webhook-timestamp`` (this attempt's epoch seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed with the
base64-decoded part of the endpoint's ``whsec_`` secret.

Two environment variables exist for tests and impatient operators: ``SORAKIT_WEBHOOK_BACKOFF``
(comma-separated seconds between attempts; after the last, the delivery is given up) and
``SORAKIT_WEBHOOK_TIMEOUT`` (seconds one POST may take, default 10).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Mapping

import httpx2

from .. import __version__
from ..config import ConfigError
from ..store.webhooks import WebhookStore, notify_on_commit
from .metrics import WEBHOOK_DELIVERIES
from .services import Services

log = logging.getLogger("sorakit.webhooks")
#: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 3 h, then every 4 h: the last try ~23 h after the first
DEFAULT_BACKOFF = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 10800.0, 14400.0, 14400.0,
                   14400.0, 14400.0)
DEFAULT_TIMEOUT = 10.0
SENDERS = 4
#: how often the table is read for deliveries other processes queued
POLL_SECONDS = 2.0
PRUNE_EVERY = 3600.0


def _seconds(env: Mapping[str, str], name: str, default):
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < 0 for v in values):
        raise ConfigError(f"{name} must be comma-separated seconds (>= 0); got {text!r}")
    return values


def backoff_from_env(env: Mapping[str, str]) -> tuple[float, ...]:
    return _seconds(env, "SORAKIT_WEBHOOK_BACKOFF", DEFAULT_BACKOFF)


def timeout_from_env(env: Mapping[str, str]) -> float:
    value = _seconds(env, "SORAKIT_WEBHOOK_TIMEOUT", (DEFAULT_TIMEOUT,))
    if len(value) != 1 or value[0] <= 0:
        raise ConfigError(f"SORAKIT_WEBHOOK_TIMEOUT must be one number of seconds > 0; got {value!r}")
    return value[0]


def signing_key(secret: str) -> bytes:
    # as the SDKs read a secret: the base64 after ``whsec_``, or the text itself
    return base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(signing_key(secret), signed, hashlib.sha256).digest()).decode()


def signed_headers(delivery: dict, body: bytes, timestamp: int) -> dict[str, str]:
    event_id = delivery["event_id"]
    return {"content-type": "application/json", "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(delivery["secret"], event_id, timestamp, body)}


def retry_at(attempts: int, backoff: tuple[float, ...], now: float) -> float | None:
    """When to try again after failed attempt number ``attempts``; None once the schedule is spent."""
    if attempts > len(backoff):
        return None
    # up to 10 % later, so deliveries that failed together do not all come back together
    return now + backoff[attempts - 1] * random.uniform(1.0, 1.1)


def post(client: httpx2.Client, delivery: dict) -> tuple[int | None, str | None]:
    """One attempt: ``(status, None)`` on a 2xx, else ``(status or None, error)``."""
    body = delivery["payload"].encode()
    headers = signed_headers(delivery, body, int(time.time()))
    try:
        # streamed and never read: a receiver's answer body is of no use, however long
        with client.stream("POST", delivery["url"], content=body, headers=headers) as reply:
            code = reply.status_code
    except Exception as exc:  # any failure to send is the receiver's problem to fix, not ours
        return None, f"{type(exc).__name__}: {exc}"[:500]
    return (code, None) if 200 <= code < 300 else (code, f"HTTP {code}")


class WebhookSender(threading.Thread):
    """The dispatcher: claims due deliveries and feeds them to sender threads."""

    def __init__(self, services: Services, senders: int = SENDERS,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__(name="sorakit-webhooks", daemon=True)
        env = os.environ if env is None else env
        self.backoff, timeout = backoff_from_env(env), timeout_from_env(env)
        self.lease = 2 * timeout + 10  # past any one attempt, so a live send is never taken twice
        self.services, self.wake = services, services.webhook_ready
        self.store = WebhookStore(services.store.engine, lambda: services.store.clock())
        self.owner = f"{socket.gethostname()}:{os.getpid()}:webhooks:{uuid.uuid4().hex[:8]}"
        self.client = httpx2.Client(timeout=timeout, follow_redirects=False,
                                    headers={"user-agent": f"sorakit-webhooks/{__version__}"})
        self.stopping = threading.Event()
        self.inbox: queue.Queue[dict | None] = queue.Queue()
        self.lock = threading.Lock()
        self.in_flight: dict[str, str] = {}  # endpoint id -> delivery id, being sent here now
        self.senders = [threading.Thread(target=self._send_loop, name=f"sorakit-webhook-sender-{i}",
                                         daemon=True) for i in range(senders)]
        self._undo = lambda: None

    def start(self) -> None:
        self._undo = notify_on_commit(self.services.store.engine, self.wake.set)
        for thread in self.senders:
            thread.start()
        super().start()

    def run(self) -> None:
        pruned = 0.0
        while not self.stopping.is_set():
            self.wake.clear()  # before looking, so a delivery queued meanwhile wakes the next wait
            wait = POLL_SECONDS
            try:
                if self._dispatch():  # with every sender busy, a finishing one wakes us
                    wait = self._until_due()
                if time.monotonic() - pruned > PRUNE_EVERY:
                    pruned = time.monotonic()
                    self.store.prune(self.store.clock() - self.services.settings.task_retention_seconds)
            except Exception:  # a busy database must not end deliveries for good
                log.exception("webhook dispatch failed")
            self.wake.wait(wait)

    def _busy(self) -> set[str]:
        with self.lock:
            return set(self.in_flight)

    def _dispatch(self) -> bool:
        """Claim what free senders can take; False when none is free."""
        busy = self._busy()
        free = len(self.senders) - len(busy)
        if free <= 0:
            return False
        for delivery in self.store.claim(self.owner, free, self.lease, busy):
            with self.lock:
                self.in_flight[delivery["endpoint_id"]] = delivery["id"]
            self.inbox.put(delivery)
        return len(self._busy()) < len(self.senders)

    def _until_due(self) -> float:
        due = self.store.next_due(self._busy())
        if due is None:
            return POLL_SECONDS
        return min(max(due - self.store.clock(), 0.01), POLL_SECONDS)

    def _send_loop(self) -> None:
        while (delivery := self.inbox.get()) is not None:
            try:
                self._deliver(delivery)
            except Exception:
                log.exception("webhook delivery %s failed to record", delivery["id"])
            finally:
                with self.lock:
                    self.in_flight.pop(delivery["endpoint_id"], None)
                self.wake.set()  # its endpoint is free again

    def _deliver(self, delivery: dict) -> None:
        code, error = post(self.client, delivery)
        where = f"{delivery['event_type']} {delivery['event_id']} to {delivery['endpoint_id']}"
        if error is None:
            self.store.mark_delivered(delivery["id"], code)
            WEBHOOK_DELIVERIES.labels("delivered").inc()
            log.info("webhook %s delivered (HTTP %s)", where, code)
            return
        again = retry_at(delivery["attempts"], self.backoff, self.store.clock())
        self.store.mark_failed(delivery["id"], self.owner, code, error, again)
        WEBHOOK_DELIVERIES.labels("given_up" if again is None else "retrying").inc()
        if again is None:
            log.warning("webhook %s given up after %d attempts: %s", where, delivery["attempts"], error)
        else:
            log.info("webhook %s attempt %d failed (%s); next in %.0f s", where, delivery["attempts"],
                     error, again - self.store.clock())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming; give senders a moment, then hand back what is still being sent, so a
        restart sends it at once instead of after the lease."""
        self.stopping.set()
        self.wake.set()
        self.join(timeout)
        for _ in self.senders:
            self.inbox.put(None)
        deadline = time.monotonic() + 1.0
        for thread in self.senders:
            thread.join(max(deadline - time.monotonic(), 0.0))
        with self.lock:
            stuck = list(self.in_flight.values())
        self.store.release(self.owner, stuck)
        self._undo()
        if not stuck:
            self.client.close()
