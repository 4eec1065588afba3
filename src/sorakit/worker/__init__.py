"""Workers: ``WorkerPool`` runs N worker threads in one process (a ``sorakit worker`` process, or
the API's own with ``worker_mode = "thread"``); ``processes.WorkerProcesses`` supervises N worker
processes for ``sorakit serve``."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from ..server.services import Services
from ..store import FLEET_ALIVE
from .listen import WorkListener
from .worker import Worker

__all__ = ["FLEET_ALIVE", "Worker", "WorkerPool"]
log = logging.getLogger("sorakit.worker")


#: seconds between heartbeats of a worker's row in the workers table; a row not seen for
#: ``FLEET_ALIVE`` seconds is shown as lost (``sorakit workers``, /metrics)
FLEET_BEAT = 5.0


def device_label(services: Services) -> str:
    """What this process renders on, for the workers table: its GPUs when a diffusers engine is
    configured and CUDA is there, else the CPU (torch is imported only for diffusers engines)."""
    if all(type(e).__name__ == "PreviewEngine" for e in services.engines.values()):
        return "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return ", ".join(f"{n} (cuda:{i})" for i, n in enumerate(names))
    except Exception:  # no torch, or a broken driver: still a worker
        pass
    return "cpu"


class WorkerPool:
    def __init__(self, services: Services, count: int, first_index: int = 0,
                 engines: list[str] | None = None) -> None:
        self.services = services
        self.stopping = threading.Event()
        self.workers = [Worker(services, first_index + i, self.stopping, engines=engines) for i in range(count)]
        self._beat = threading.Thread(target=self._heartbeats, name="sorakit-fleet-beat", daemon=True)
        #: on PostgreSQL, woken by the database when a task is queued anywhere (worker/listen.py)
        self.listener = None
        if self.workers and services.store.engine.dialect.name == "postgresql":
            self.listener = WorkListener(services.store.engine, services.work_ready, self.stopping)
            for w in self.workers:
                w.listener = self.listener

    def start(self) -> None:
        self._register()
        if self.listener is not None:
            self.listener.start()
        for w in self.workers:
            w.start()
        if self.workers:
            self._beat.start()

    def _register(self) -> None:
        if not self.workers:
            return
        from .. import __version__

        device = device_label(self.services)
        for w in self.workers:
            try:
                self.services.store.register_worker({
                    "name": w.name_in_fleet, "host": socket.gethostname(), "pid": os.getpid(),
                    "version": __version__, "engines": w.engine_names, "device": device})
            except Exception:  # the fleet list is a view: a worker still works without its row
                log.exception("worker %s: could not register in the workers table", w.name_in_fleet)

    def _heartbeats(self) -> None:
        while not self.stopping.wait(FLEET_BEAT):
            for w in self.workers:
                done, w.finished = w.finished, 0
                try:
                    self.services.store.worker_seen(w.name_in_fleet, w.current, done)
                except Exception:
                    w.finished += done
                    log.warning("worker %s: heartbeat of its row failed", w.name_in_fleet)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every worker to stop; running tasks go back to the queue."""
        self.stopping.set()
        for w in self.workers:
            w.services.work_ready.set()  # wake idle workers so they see the stop at once
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.join(max(deadline - time.monotonic(), 0.1))
        for w in self.workers:
            try:
                if w.finished:
                    self.services.store.worker_seen(w.name_in_fleet, None, w.finished)
                self.services.store.worker_stopped(w.name_in_fleet)
            except Exception:
                log.warning("worker %s: could not record its stop", w.name_in_fleet)
