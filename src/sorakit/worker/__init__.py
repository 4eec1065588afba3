"""Workers: ``WorkerPool`` runs N worker threads in one process (a ``sorakit worker`` process, or
the API's own with ``worker_mode = "thread"``); ``processes.WorkerProcesses`` supervises N worker
processes for ``sorakit serve``."""

from __future__ import annotations

import logging
import threading
import time

from ..server.services import Services
from .worker import Worker

__all__ = ["Worker", "WorkerPool"]
log = logging.getLogger("sorakit.worker")


class WorkerPool:
    def __init__(self, services: Services, count: int, first_index: int = 0) -> None:
        self.stopping = threading.Event()
        self.workers = [Worker(services, first_index + i, self.stopping) for i in range(count)]

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every worker to stop; running tasks go back to the queue."""
        self.stopping.set()
        for w in self.workers:
            w.services.work_ready.set()  # wake idle workers so they see the stop at once
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.join(max(deadline - time.monotonic(), 0.1))
