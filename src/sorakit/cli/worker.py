"""``sorakit worker``: a process that claims tasks from the store and renders them.

``sorakit serve`` starts its workers this way (``worker_mode = "process"``, the default). It can
also run alone beside a server, on the same data directory (the same database and media folder).

``torchrun --nproc-per-node N -m sorakit worker`` runs one worker on N GPUs for the models that set
``context_parallel`` (docs/parallel.md): rank 0 claims and records tasks, ranks 1.. follow its runs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from typing import Annotated

import typer

from .common import DatabaseUrl, DataDir, Media, fail, open_services, settings

PARENT_CHECK = 1.0  # seconds between looks at whether the parent is still there


def worker(data_dir: DataDir = None,
           database_url: DatabaseUrl = None,
           media: Media = None,
           name: Annotated[str | None, typer.Option(
               help="This worker's name in `sorakit workers` (default: host:pid).", show_default=False)] = None,
           engines: Annotated[str | None, typer.Option(
               help="Claim only tasks for these engines or models, comma-separated (default: every one configured).",
               show_default=False)] = None,
           threads: Annotated[int, typer.Option(min=1, help="Tasks this process runs at once [1].")] = 1,
           index: Annotated[int, typer.Option(hidden=True)] = 0,
           settings_stdin: Annotated[bool, typer.Option("--settings-stdin", hidden=True,
                                                        help="Read the settings as JSON on stdin.")] = False,
           parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
           log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR [INFO].")] = "INFO",
           metrics_port: Annotated[int | None, typer.Option(
               min=1, max=65535, help="Serve Prometheus metrics on this port (GET /metrics; default: off).")] = None,
           metrics_host: Annotated[str, typer.Option(
               help="Address --metrics-port listens on.")] = "127.0.0.1") -> None:
    """Run workers: claim queued tasks, render and encode them, record the results."""
    from ..config import ConfigError, load_settings
    from ..worker import WorkerPool

    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        fail(f"--log-level: {log_level!r} is not one of DEBUG, INFO, WARNING, ERROR", code=2)
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s %(name)s[w{index}]: %(message)s")
    if settings_stdin:
        try:
            s = load_settings(json.loads(sys.stdin.read()), env={})
        except (ConfigError, ValueError) as exc:
            fail(f"worker settings: {exc}", code=2)
    else:
        s = settings(data_dir=data_dir, database_url=database_url, media=media, worker_name=name)
    if parent_pid is not None and s.worker_nice:
        # a worker of `serve` shares its machine with the API: it yields the CPU to requests
        os.nice(s.worker_nice)
    services = open_services(s)
    from ..engines import parallel

    try:  # under torchrun (WORLD_SIZE > 1): one process per GPU for the context_parallel models
        group = parallel.start(services.engines, threads, spawned=parent_pid is not None)
    except ConfigError as exc:
        fail(str(exc), code=2)
    if group is not None and not group.leader:  # ranks > 0 only mirror rank 0's runs of those models
        raise typer.Exit(group.follow(services.engines))
    wanted = None
    if engines is not None:
        wanted = [e.strip() for e in engines.split(",") if e.strip()]
        unknown = [e for e in wanted if e not in services.engines]
        if unknown or not wanted:
            fail(f"--engines: {', '.join(unknown) or 'none given'} not configured here "
                 f"(configured: {', '.join(sorted(services.engines))})", code=2)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if metrics_port is not None:  # a worker of its own (those of `serve` report through the API)
        from ..worker.metrics import serve_http

        try:
            serve_http(metrics_port, metrics_host)
        except OSError as exc:
            fail(f"--metrics-port: cannot listen on {metrics_host}:{metrics_port}: {exc}", code=2)
    if group is not None:  # the ranks stopped agreeing: stop, so that torchrun ends them all
        group.when_broken(stop.set)
    pool = WorkerPool(services, threads, first_index=index, engines=wanted)
    pool.start()
    while not stop.wait(PARENT_CHECK):
        if parent_pid is not None and os.getppid() != parent_pid:
            logging.getLogger("sorakit.worker").warning("the server process is gone; stopping")
            break
    pool.stop()
    if group is not None:
        raise typer.Exit(group.close())  # tells ranks > 0 to stop; 1 when the group broke
