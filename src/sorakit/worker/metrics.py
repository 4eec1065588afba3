"""The workers' own Prometheus metrics: how long each stage of a task took, and how attempts ended.

They are observed where the work happens, in the worker. Where they are read from depends on
where the worker runs:

- ``worker_mode = "thread"``: in the API's process; its ``/metrics`` appends ``REGISTRY``.
- ``sorakit serve`` with worker processes: the parent gives each child ``PROMETHEUS_MULTIPROC_DIR``
  (``multiproc_dir``), so prometheus_client keeps these values in files there, and the API's
  ``/metrics`` adds them up over all children (``server/metrics.py``). The API process itself
  then shows none of its own (it runs no worker), so no name is listed twice.
- ``sorakit worker`` started by hand (a remote worker): ``--metrics-port`` serves them with the
  process's default metrics (``serve_http``).

Metrics (``model`` is the task's engine, as in ``sorakit_queue_depth``):

- ``sorakit_generation_seconds{model, stage}`` histogram: ``queued`` (created to first claimed;
  observed once per task, on its first attempt), and for a task that succeeds ``render`` (engine
  frames and encoding, which stream together), ``finish`` (thumbnails, sprite sheet, publishing
  the files and committing) and ``total`` (created to succeeded, retries included).
- ``sorakit_tasks_finished_total{model, outcome}`` counter: tasks a worker finished, by outcome
  ``succeeded``, ``failed`` or ``cancelled`` (tasks cancelled before a worker took them, or given
  up by a claim after too many lost attempts, are not counted here; ``sorakit_tasks`` has them).
- ``sorakit_task_attempts_abandoned_total{model, reason}`` counter: attempts that ended without
  finishing their task: ``released`` (handed back on shutdown) or ``lost`` (its lease ran out and
  another attempt owns the task now).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger("sorakit.worker")

#: seconds: from sub-second previews to long diffusion renders and long queues
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
           3600.0, 7200.0, float("inf"))
FINISHED = ("succeeded", "failed", "cancelled")
ABANDONED = ("released", "lost")

#: the worker metrics alone: never in prometheus_client's default registry, so the API process
#: (which has its own metrics there) decides whether its workers' values come from here or from
#: the children's files
REGISTRY = CollectorRegistry(auto_describe=True)
GENERATION_SECONDS = Histogram(
    "sorakit_generation_seconds", "Seconds a task spent in each stage, by model (engine) and stage.",
    ["model", "stage"], buckets=BUCKETS, registry=REGISTRY)
TASKS_FINISHED = Counter(
    "sorakit_tasks_finished", "Tasks finished by a worker, by model (engine) and outcome.",
    ["model", "outcome"], registry=REGISTRY)
ATTEMPTS_ABANDONED = Counter(
    "sorakit_task_attempts_abandoned", "Attempts that ended without finishing their task "
    "(released on shutdown, or lease lost), by model (engine) and reason.",
    ["model", "reason"], registry=REGISTRY)


def observe(run) -> None:
    """Record one finished attempt of ``worker.Run``: its ``task``, ``outcome`` (one of
    ``FINISHED`` or ``ABANDONED``) and ``marks`` (``time.monotonic()`` at ``start`` and, once the frames were
    rendered and encoded, ``render``). Never raises: metrics must not fail a task."""
    try:
        task, outcome, marks = run.task, run.outcome, run.marks
        model = str(task.get("engine") or "unknown")
        counter = TASKS_FINISHED if outcome in FINISHED else ATTEMPTS_ABANDONED
        counter.labels(model, outcome).inc()
        # the first attempt's claim ends the wait (a released attempt is given back uncounted)
        if task.get("attempts") == 1 and outcome != "released" and task.get("started_at"):
            GENERATION_SECONDS.labels(model, "queued").observe(max(task["started_at"] - task["created_at"], 0.0))
        if outcome == "succeeded" and "render" in marks:
            now = time.monotonic()
            GENERATION_SECONDS.labels(model, "render").observe(marks["render"] - marks["start"])
            GENERATION_SECONDS.labels(model, "finish").observe(now - marks["render"])
            total = run.store.clock() - task["created_at"]
            GENERATION_SECONDS.labels(model, "total").observe(max(total, 0.0))
    except Exception:
        log.exception("could not record the metrics of task %s", getattr(run, "task", {}).get("id"))


# -- worker processes of `sorakit serve` ---------------------------------------------------------
def multiproc_dir(data_dir: Path) -> Path:
    """A fresh, empty folder for the multiprocess values of one ``sorakit serve``'s children:
    ``<data_dir>/metrics/<host>-<pid>``. Folders that a dead server on this host left behind
    (a crash; a clean stop removes its own) are removed on the way."""
    root = data_dir / "metrics"
    host = socket.gethostname()
    mine = root / f"{host}-{os.getpid()}"
    if root.is_dir():
        for old in root.iterdir():
            name, _, pid = old.name.rpartition("-")
            if name == host and pid.isdigit() and old != mine and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir(parents=True, mode=0o700)
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


# -- a worker on its own: `sorakit worker --metrics-port` ------------------------------------------
def serve_http(port: int, host: str = "127.0.0.1"):
    """Serve the worker metrics and the process's default ones (CPU, memory, GC) over HTTP."""
    from prometheus_client import REGISTRY as DEFAULT
    from prometheus_client import start_http_server

    for metric in (GENERATION_SECONDS, TASKS_FINISHED, ATTEMPTS_ABANDONED):
        DEFAULT.register(metric)
    return start_http_server(port, addr=host, registry=DEFAULT)
