"""Housekeeping that keeps a long-running server's disk and database from growing without end.

One pass removes what crashed attempts left in ``media/`` (temp directories whose task no worker
holds, and finished-looking directories no draft points at), prunes finished tasks that no draft
needs and idempotency keys past their window, and expires old uploads. A thread runs a pass at
start-up and every ``maintenance_interval_seconds``. Every step is safe with several server
processes on one data dir: it decides from the database, never from process memory.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
import weakref
from dataclasses import asdict, dataclass

from ..media.storage import StorageError
from .services import Services

log = logging.getLogger("sorakit.maintenance")
#: a draft directory is renamed into place just before its row is committed: give that a moment
ORPHAN_GRACE = 600.0
#: a temp directory is made just after its task is claimed: never race that
TMP_GRACE = 60.0
#: a bucket is listed for orphaned objects at most this often (each pass would be a request for
#: every thousand objects)
BUCKET_SWEEP_INTERVAL = 3600.0
WORKER_ROWS_KEPT = 86400.0  # seconds a worker's row outlives its last heartbeat


@dataclass
class Pass:
    temp_dirs: int = 0
    orphan_dirs: int = 0
    tasks: int = 0
    idempotency_keys: int = 0
    uploads: int = 0
    workers: int = 0

    def total(self) -> int:
        return sum(asdict(self).values())


def _age(path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def sweep_media(services: Services, now: float | None = None) -> tuple[int, int]:
    """Remove temp dirs of tasks no worker holds (this machine's), and draft dirs (objects) no
    draft row names."""
    now = time.time() if now is None else now
    media = services.settings.media_dir
    remote = services.media.kind != "local"
    if not media.is_dir():
        return 0, _sweep_bucket(services, now) if remote else 0
    held = services.store.held_task_ids()
    temps = [p for p in (media / "tmp").glob("*")
             if p.name.split(".")[0] not in held and _age(p, now) > TMP_GRACE]
    for path in temps:
        shutil.rmtree(path, ignore_errors=True)
    if remote:
        return len(temps), _sweep_bucket(services, now)
    known = services.store.known_generation_ids()
    orphans = [p for p in media.glob("gen_*") if p.name not in known and _age(p, now) > ORPHAN_GRACE]
    for path in orphans:
        shutil.rmtree(path, ignore_errors=True)
    return len(temps), len(orphans)


#: when each bucket was last listed for orphans, by storage (listing a large bucket costs requests)
_bucket_sweeps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sweep_bucket(services: Services, now: float) -> int:
    """Drafts' objects no draft row names (a crash between upload and commit, a failed delete),
    once their newest object is ORPHAN_GRACE old: listed at most every BUCKET_SWEEP_INTERVAL."""
    media = services.media
    if now - _bucket_sweeps.get(media, -math.inf) < BUCKET_SWEEP_INTERVAL:
        return 0
    _bucket_sweeps[media] = now
    newest: dict[str, float] = {}
    try:
        for entry in media.entries(""):
            folder = entry.key.split("/")[0]
            if folder.startswith("gen_") and "/" in entry.key:
                newest[folder] = max(newest.get(folder, 0.0), entry.mtime)
        known = services.store.known_generation_ids()
        orphans = [g for g, mtime in newest.items() if g not in known and now - mtime > ORPHAN_GRACE]
        for gen_id in orphans:
            media.delete_prefix(gen_id)
    except StorageError as exc:
        log.warning("maintenance: the media bucket could not be swept: %s", exc)
        return 0
    return len(orphans)


def delete_draft_files(services: Services, gen_id: str) -> None:
    """A deleted draft's files. A storage failure is logged, not answered: the row is gone, so the
    links are dead, and the orphan sweep removes the files later."""
    try:
        services.media.delete_prefix(gen_id)
    except StorageError as exc:
        log.warning("files of deleted draft %s not removed yet: %s", gen_id, exc)


def run_once(services: Services, now: float | None = None) -> Pass:
    from .uploads import prune_uploads

    now = services.store.clock() if now is None else now
    s = services.settings
    done = Pass()
    done.temp_dirs, done.orphan_dirs = sweep_media(services, now)
    done.tasks, done.idempotency_keys = services.store.prune(now - s.task_retention_seconds)
    done.uploads = prune_uploads(services, now)
    # rows of workers gone for a day: `sorakit workers --all` shows a recent death, not history
    done.workers = services.store.forget_workers(now - WORKER_ROWS_KEPT)
    if done.total():
        log.info("maintenance: removed %s", ", ".join(f"{v} {k.replace('_', ' ')}"
                                                        for k, v in asdict(done).items() if v))
    return done


class Maintenance(threading.Thread):
    """Runs :func:`run_once` now and then every interval until stopped."""

    def __init__(self, services: Services) -> None:
        super().__init__(name="sorakit-maintenance", daemon=True)
        self.services = services
        self.stopping = threading.Event()

    def run(self) -> None:
        interval = self.services.settings.maintenance_interval_seconds
        while True:
            try:
                run_once(self.services)
            except Exception:  # a busy or broken pass must not end housekeeping for good
                log.exception("maintenance pass failed")
            if self.stopping.wait(interval):
                return

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
