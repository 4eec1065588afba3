"""Idle workers woken by the database: PostgreSQL's LISTEN/NOTIFY.

A task that becomes claimable (admitted, or handed back) is announced on ``WORK_CHANNEL`` by the
transaction that makes it so (store.py). One thread per worker process listens on its own
connection and sets ``services.work_ready``, so an idle worker on any machine claims within
moments while polling the queue only every ``LISTENING_POLL`` seconds: the poll remains for what
no notification announces (a lease running out, a notification lost while reconnecting).
"""

from __future__ import annotations

import logging
import threading

from ..store.db import first_line
from ..store.store import WORK_CHANNEL

log = logging.getLogger("sorakit.worker")
#: seconds between polls of the queue by an idle worker that is listening
LISTENING_POLL = 2.0
RECONNECT_PAUSE = 2.0


class WorkListener(threading.Thread):
    def __init__(self, engine, ready: threading.Event, stopping: threading.Event) -> None:
        super().__init__(name="sorakit-work-listener", daemon=True)
        self.engine, self.ready, self.stopping = engine, ready, stopping
        #: set once it listens (tests wait for it); cleared while it reconnects
        self.listening = threading.Event()

    def _connect(self):
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="sorakit-listen")
        conn.execute(f"LISTEN {WORK_CHANNEL}")
        return conn

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with self._connect() as conn:
                    self.listening.set()
                    # anything queued while we were not listening is found by the next poll
                    self.ready.set()
                    while not self.stopping.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.ready.set()
            except Exception as exc:  # the database went away: poll meanwhile, listen again soon
                self.listening.clear()
                log.warning("work listener: %s; polling until it reconnects", first_line(exc))
                self.stopping.wait(RECONNECT_PAUSE)
        self.listening.clear()
