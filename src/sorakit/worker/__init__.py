"""In-process workers: ``WorkerPool`` runs N of them beside the HTTP server."""

from __future__ import annotations

import logging
import shutil
import threading
import time

from ..server.services import Services
from .worker import Worker

__all__ = ["Worker", "WorkerPool", "sweep_media"]
log = logging.getLogger("sorakit.worker")
ORPHAN_AGE = 3600.0


class WorkerPool:
    def __init__(self, services: Services, count: int) -> None:
        self.stopping = threading.Event()
        self.workers = [Worker(services, i, self.stopping) for i in range(count)]

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


def sweep_media(services: Services, now: float | None = None) -> int:
    """Remove what crashed attempts left: temp files and directories no draft points at.

    Only entries older than an hour go, so a live worker's files (here or in another process)
    are never touched.
    """
    now = time.time() if now is None else now
    media = services.settings.media_dir
    if not media.is_dir():
        return 0
    known = services.store.known_generation_ids()
    candidates = list((media / "tmp").glob("*")) + [p for p in media.glob("gen_*") if p.name not in known]
    removed = 0
    for path in candidates:
        if now - path.stat().st_mtime > ORPHAN_AGE:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d leftovers of interrupted tasks", removed)
    return removed
