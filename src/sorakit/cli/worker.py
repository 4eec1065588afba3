"""``sorakit worker``: a process that claims tasks from the store and renders them.

``sorakit serve`` starts its workers this way (``worker_mode = "process"``, the default). It can
also run alone beside a server, on the same data directory (the same database and media folder).
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

from .common import DataDir, fail, settings

PARENT_CHECK = 1.0  # seconds between looks at whether the parent is still there


def worker(data_dir: DataDir = None,
           threads: Annotated[int, typer.Option(min=1, help="Tasks this process runs at once [1].")] = 1,
           index: Annotated[int, typer.Option(hidden=True)] = 0,
           settings_stdin: Annotated[bool, typer.Option("--settings-stdin", hidden=True,
                                                        help="Read the settings as JSON on stdin.")] = False,
           parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
           log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR [INFO].")] = "INFO") -> None:
    """Run workers: claim queued tasks, render and encode them, record the results."""
    from ..config import ConfigError, load_settings
    from ..server.services import build_services
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
        s = settings(data_dir=data_dir)
    services = build_services(s)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pool = WorkerPool(services, threads, first_index=index)
    pool.start()
    while not stop.wait(PARENT_CHECK):
        if parent_pid is not None and os.getppid() != parent_pid:
            logging.getLogger("sorakit.worker").warning("the server process is gone; stopping")
            break
    pool.stop()
