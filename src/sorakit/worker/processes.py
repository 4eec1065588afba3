"""Worker processes: ``sorakit serve`` runs its workers as ``sorakit worker`` children.

Rendering and encoding hold the GIL for long stretches; in the API's own process they stall every
request (poll p99 past a second under load). A child process per worker keeps them apart. The
children claim tasks from the store with the same leases and heartbeats as in-process workers;
nothing but the database passes between them and the API.

- Each child gets the parent's exact settings on its standard input (JSON), so a flag given to
  ``serve`` applies to its workers too, and no secret shows in the process list.
- A child that dies is noticed within half a second and started again (backing off to 30 s when
  it keeps dying); its task's lease runs out and another attempt takes it, as after any crash.
- ``stop`` sends SIGTERM: a child hands its running task back to the queue and exits; one that
  is still there after the timeout is killed.
- A child whose parent died (killed with no chance to stop it) notices within a second, hands its
  task back and exits: no orphan keeps rendering.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from ..config import Settings, settings_json
from .metrics import multiproc_dir

log = logging.getLogger("sorakit.worker")
CHECK_INTERVAL = 0.5
MAX_BACKOFF = 30.0


class Child:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.next_start = 0.0
        self.started_at = 0.0


class WorkerProcesses:
    def __init__(self, settings: Settings, count: int) -> None:
        self.settings, self.children = settings, [Child(i) for i in range(count)]
        #: the children's Prometheus values (PROMETHEUS_MULTIPROC_DIR), summed by the API's /metrics
        self.metrics_dir = None
        self.stopping = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="sorakit-worker-monitor", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self.metrics_dir = multiproc_dir(self.settings.data_dir)
        for child in self.children:
            self._spawn(child)
        self._monitor.start()

    def _spawn(self, child: Child) -> None:
        # the children log as much as the parent does: INFO under `serve`, warnings only under the
        # embedded server of a CLI command (whose terminal shows the command's own progress)
        level = logging.getLevelName(logging.getLogger("sorakit").getEffectiveLevel())
        command = [sys.executable, "-m", "sorakit", "worker", "--settings-stdin", "--index", str(child.index),
                   "--parent-pid", str(os.getpid()), "--log-level", level]
        # its metrics go to files there, for the API's /metrics to add up (worker/metrics.py)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
        try:
            proc.stdin.write(json.dumps(settings_json(self.settings)).encode())
            proc.stdin.close()
        except OSError:  # it died at once; the monitor restarts it
            pass
        child.proc, child.started_at = proc, time.monotonic()
        log.info("worker process %d started (pid %d)", child.index, proc.pid)

    def _watch(self) -> None:
        while not self.stopping.wait(CHECK_INTERVAL):
            with self._lock:
                for child in self.children:
                    self._check(child)

    def _check(self, child: Child) -> None:
        now = time.monotonic()
        if child.proc is not None and child.proc.poll() is not None:
            code = child.proc.returncode
            # a child that ran a while before dying starts afresh; one that keeps dying backs off
            child.restarts = 0 if now - child.started_at > 60 else child.restarts + 1
            delay = min(2 ** child.restarts - 1, MAX_BACKOFF)
            log.error("worker process %d (pid %d) exited with %s; restarting in %.0f s", child.index,
                      child.proc.pid, code, delay)
            child.proc, child.next_start = None, now + delay
        if child.proc is None and now >= child.next_start and not self.stopping.is_set():
            self._spawn(child)

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.children if c.proc is not None and c.proc.poll() is None]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every child (each hands its task back), then SIGKILL what is left at ``timeout``."""
        self.stopping.set()
        with self._lock:
            procs = [c.proc for c in self.children if c.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("worker process (pid %d) did not stop in %.0f s; killing it", proc.pid, timeout)
                proc.kill()
                proc.wait()
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
