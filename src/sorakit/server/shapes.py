"""Wire shapes of tasks and drafts (PROTOCOL sections 3 and 4): every documented key, always.

Links are minted fresh on every call, so each listing hands out URLs valid for the full lifetime.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from ..store import FLEET_ALIVE, Store
from .services import Services

DEFAULT_SECONDS_PER_FRAME = 0.02  # until the server has timed a few tasks of its own
#: ``generation_type`` of a draft, by the operation that made it
GENERATION_TYPES = {"generate": "video_gen", "remix": "remix", "extend": "extension",
                    "storyboard": "storyboard"}
ENCODINGS = ("source", "source_wm", "md", "gif", "thumbnail", "unfurl")
#: how long one reading of the queue's order (and of recent run times) serves every listing in this
#: process. Positions of tasks already queued then lag claims made by other processes by at most
#: this; a claim, cancel or delete made through this process's store drops the reading at once, and
#: a task queued since the reading is placed by an exact count of its own.
QUEUE_VIEW_SECONDS = 0.5


@dataclass(frozen=True)
class QueueSnapshot:
    until: float  # time.monotonic() after which it is read again
    epoch: int  # the store's queue_epoch it was read at
    order: dict[str, int]  # queued task id -> position (1: next)
    per_frame: float  # median seconds per frame of recent runs
    workers: int  # workers alive in the workers table (0: none registered, e.g. none started yet)


_snapshots: weakref.WeakKeyDictionary[Store, QueueSnapshot] = weakref.WeakKeyDictionary()
_reading = threading.Lock()


def _read_snapshot(store: Store) -> QueueSnapshot:
    epoch, began = store.queue_epoch, time.monotonic()  # its age counts from before the reads
    order = {task_id: i + 1 for i, task_id in enumerate(store.queue_order())}
    samples = store.recent_run_seconds()
    per_frame = statistics.median(samples) if samples else DEFAULT_SECONDS_PER_FRAME
    alive = store.count_alive_workers(time.time() - FLEET_ALIVE)
    snap = QueueSnapshot(began + QUEUE_VIEW_SECONDS, epoch, order, per_frame, alive)
    _snapshots[store] = snap
    return snap


def queue_snapshot(store: Store) -> QueueSnapshot:
    """The queue as this process last read it, read again when older than QUEUE_VIEW_SECONDS or
    when this process changed the queue since. One thread reads at a time; while it does, the
    others keep using the reading that just expired (unless the queue changed here)."""
    snap = _snapshots.get(store)
    if snap is not None and snap.epoch == store.queue_epoch and time.monotonic() <= snap.until:
        return snap
    if snap is not None and snap.epoch == store.queue_epoch:
        if not _reading.acquire(blocking=False):
            return snap  # someone is reading it now: this one is at most a moment older
    else:
        _reading.acquire()
    try:
        again = _snapshots.get(store)
        if again is not None and again is not snap and again.epoch == store.queue_epoch \
                and time.monotonic() <= again.until:
            return again  # read by another thread while this one waited
        return _read_snapshot(store)
    finally:
        _reading.release()


class QueueView:
    """Queue positions and wait estimates for one listing, only when a listed task is queued (most
    polls list none: then nothing about the queue is read at all). The order comes from
    :func:`queue_snapshot`, so positions may lag by up to QUEUE_VIEW_SECONDS; a queued task the
    snapshot does not know yet (created since) is placed by an indexed count instead."""

    def __init__(self, services: Services, rows: list[dict]) -> None:
        self.store = services.store
        self.order: dict[str, int] = {}
        self.per_frame = DEFAULT_SECONDS_PER_FRAME
        self.workers = max(services.settings.workers, 1)
        if any(r["status"] == "queued" for r in rows):
            snap = queue_snapshot(self.store)
            self.order, self.per_frame = snap.order, snap.per_frame
            # a fleet's workers are those alive in the workers table, wherever they run
            self.workers = snap.workers or self.workers

    def position(self, task_id: str) -> int | None:
        return self.order.get(task_id)

    def place(self, row: dict) -> int | None:
        """The position of a listed task: None unless it is queued."""
        if row["status"] != "queued":
            return None
        found = self.order.get(row["id"])
        return found if found is not None else self.store.queue_position(row)

    def wait_seconds(self, position: int, n_frames: int) -> int:
        return math.ceil(position * n_frames * self.per_frame / self.workers)


class Shaper:
    def __init__(self, services: Services, base_url: str) -> None:
        self.services = services
        self.base_url = base_url.rstrip("/")

    def link(self, gen_id: str, filename: str | None, ttl: float | None = None) -> str | None:
        """A link to one of a draft's files for ``ttl`` seconds (default: link_ttl_seconds): the
        bucket's presigned URL when the media storage makes one, else a signed ``/assets`` path."""
        if not filename:
            return None
        signer = self.services.signer
        url = self.services.media.url(f"{gen_id}/{filename}", signer.ttl if ttl is None else ttl)
        return url or self.base_url + signer.sign(f"/assets/{gen_id}/{filename}", ttl=ttl)

    # -- drafts ---------------------------------------------------------------------------
    def draft(self, gen: dict, task: dict | None = None) -> dict[str, Any]:
        video = self.link(gen["id"], gen["video_file"] and "video.mp4")
        thumb = self.link(gen["id"], gen["thumbnail_file"] and "thumbnail.webp")
        meta = gen["meta"] or {}
        encodings = {name: None for name in ENCODINGS}
        if video:
            # No watermark and no re-encode exist here: every video encoding is the source file.
            encodings.update(source={"path": video}, source_wm={"path": video}, md={"path": video})
        if thumb:
            encodings["thumbnail"] = {"path": thumb}
        config = meta.get("creation_config") or {}
        operation = meta.get("operation") or config.get("operation") or "generate"
        return {
            "id": gen["id"], "generation_id": gen["id"], "task_id": gen["task_id"], "kind": gen["kind"],
            "url": video, "downloadable_url": video, "video_url": video, "download_url": video,
            "thumbnail_url": thumb, "encodings": encodings,
            "width": gen["width"], "height": gen["height"], "n_frames": gen["n_frames"],
            "prompt": meta.get("prompt"), "title": meta.get("title"), "tags": [],
            "created_at": gen["created_at"], "storyboard_id": None, "draft_reviewed": False,
            "generation_type": GENERATION_TYPES.get(operation, "video_gen"),
            "creation_config": meta.get("creation_config"),
            "remix_target_post": config.get("remix_target_post"),
            "source_generation_id": config.get("source_generation_id"),
            "variant_index": meta.get("variant"), "n_variants": meta.get("n_variants") or 1,
            "has_audio": bool(meta.get("has_audio")),
            "reason_str": gen["reason_str"], "markdown_reason_str": meta.get("markdown_reason_str"),
            "error_reason": gen["error_reason"], "engine": meta.get("engine"),
            "video_bytes": gen["video_bytes"],
        }

    # -- tasks ----------------------------------------------------------------------------
    def tasks(self, rows: list[dict]) -> list[dict[str, Any]]:
        if not rows:
            return []
        gens = self.services.store.generations_for(r["id"] for r in rows)
        queue = QueueView(self.services, rows)
        return [self.task(r, gens[r["id"]], queue) for r in rows]

    def task(self, row: dict, gens: list[dict], queue: QueueView) -> dict[str, Any]:
        position = queue.place(row)
        wait = queue.wait_seconds(position, row["n_frames"]) if position else None
        return {
            "id": row["id"], "status": row["status"], "progress_pct": _progress(row),
            "progress_pos_in_queue": position, "estimated_queue_wait_time": wait,
            "queue_status_message": _queue_message(row["status"], position, wait),
            "created_at": row["created_at"], "finished_at": row["finished_at"],
            "task_type": "video_gen", "type": "video_gen",
            "prompt": row["prompt"], "title": row["title"], "model": row["model"],
            "n_frames": row["n_frames"], "width": row["width"], "height": row["height"],
            "orientation": row["orientation"], "size": row["size"], "seed": row["seed"],
            "style_id": row["style_id"], "inpaint_items": row["inpaint_items"],
            "generations": [self.draft(g) for g in gens],
            "failure_reason": row["failure_reason"], "priority": row["priority"],
            "operation": row.get("operation") or "generate", "n_variants": row.get("n_variants") or 1,
            "has_audio": any((g["meta"] or {}).get("has_audio") for g in gens),
        }


def _progress(row: dict) -> float | None:
    if row["status"] in ("preprocessing", "queued"):
        return None
    if row["status"] in ("processing", "succeeded"):
        return 1.0
    return row["progress"]


def _queue_message(status: str, position: int | None, wait: int | None) -> str | None:
    if status == "preprocessing":
        return "Preparing your request"
    if status == "queued" and position:
        return f"Position {position} in the queue, about {wait} s to start"
    return None
