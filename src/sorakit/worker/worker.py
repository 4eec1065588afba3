"""Workers: claim a task under a lease, run its engine, encode, record the outcome exactly once.

Each worker is a thread with a heartbeat beside it while a task runs. The heartbeat renews the
lease and watches the task's cancel flag; the engine sees both through ``ctx.check_cancel()``
between frames (or denoising steps). Output is written under a temporary name and renamed into
place before the outcome is committed, and the commit is conditional on still holding the lease:
a half-written file is never listed, and a worker that lost its lease records nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from ..engines import Cancelled, EngineError, RenderJob
from ..ids import new_id
from ..media.encode import encode_mp4, write_spritesheet, write_webp_thumbnail
from ..private import private_dir, private_files
from ..server.create import creation_config
from ..server.services import Services
from ..store import Claim

log = logging.getLogger("sorakit.worker")
PROGRESS_INTERVAL = 0.5  # seconds between progress writes
CANCEL_POLL = 0.25  # seconds between looks at the cancel flag: a cancel lands well within a second
#: the files a finished draft has, and the generations column naming each
OUTPUTS = {"video.mp4": "video_file", "thumbnail.webp": "thumbnail_file",
           "spritesheet.jpg": "spritesheet_file"}


class Heartbeat(threading.Thread):
    """Renews a claim's lease and turns a cancel request, a lost lease or shutdown into a flag."""

    def __init__(self, services: Services, claim: Claim, stopping: threading.Event) -> None:
        super().__init__(name=f"heartbeat-{claim.task['id']}", daemon=True)
        self.services, self.claim, self.stopping = services, claim, stopping
        self.done = threading.Event()
        self.cancelled = self.lost = False

    @property
    def interrupted(self) -> bool:
        return self.cancelled or self.lost or self.stopping.is_set()

    def run(self) -> None:
        while not self.done.wait(CANCEL_POLL):
            try:
                held, cancel = self.services.store.renew(self.claim, self.services.settings.lease_seconds)
            except Exception:  # a busy database must not kill the heartbeat; the lease has slack
                log.exception("lease renewal failed for %s", self.claim.task["id"])
                continue
            self.lost = self.lost or not held
            self.cancelled = self.cancelled or cancel


class TaskContext:
    """The engine's view of its task: progress in, cancellation out."""

    def __init__(self, services: Services, claim: Claim, heartbeat: Heartbeat, share: float) -> None:
        self.services, self.claim, self.heartbeat, self.share = services, claim, heartbeat, share
        self.n_frames = claim.task["n_frames"]
        # A retried attempt starts over, but the bar it shows never drops below what an earlier
        # attempt reached (the official API's progress must not go backwards): it stalls instead.
        self.floor = claim.task["progress"] or 0.0
        self.engine_fraction = 0.0
        self.encoded = 0
        self._last_write = 0.0

    def check_cancel(self) -> None:
        if self.heartbeat.interrupted:
            raise Cancelled(self.claim.task["id"])

    def progress(self, fraction: float) -> None:
        self.engine_fraction = min(max(fraction, self.engine_fraction), 1.0)
        self._publish()

    def on_frame(self, count: int) -> None:
        self.encoded = count
        self._publish()

    def overall(self) -> float:
        encoded = self.encoded / self.n_frames
        return round(self.share * self.engine_fraction + (1 - self.share) * encoded, 4)

    def _publish(self) -> None:
        now = time.monotonic()
        if now - self._last_write >= PROGRESS_INTERVAL:
            self._last_write = now
            self.services.store.set_progress(self.claim, max(min(self.overall(), 0.99), self.floor))


class Worker(threading.Thread):
    def __init__(self, services: Services, index: int, stopping: threading.Event,
                 poll_interval: float = 0.2) -> None:
        super().__init__(name=f"sorakit-worker-{index}", daemon=True)
        self.services, self.stopping, self.poll_interval = services, stopping, poll_interval
        self.owner = f"{socket.gethostname()}:{os.getpid()}:w{index}:{uuid.uuid4().hex[:8]}"

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                claim = self._claim()
                if claim is None:
                    # Woken by a new task in this process; the timeout covers other processes'
                    # tasks and expired leases.
                    self.services.work_ready.wait(self.poll_interval)
                    self.services.work_ready.clear()
                    continue
                self.execute(claim)
            except Exception:  # the worker outlives anything a task or the database throws
                log.exception("worker %s: unexpected error", self.owner)
                self.stopping.wait(1.0)

    def _claim(self) -> Claim | None:
        s = self.services.settings
        return self.services.store.claim(self.owner, s.lease_seconds, s.max_attempts)

    def execute(self, claim: Claim) -> None:
        heartbeat = Heartbeat(self.services, claim, self.stopping)
        heartbeat.start()
        try:
            Run(self.services, claim, heartbeat).execute()
        finally:
            heartbeat.done.set()
            heartbeat.join()


class Run:
    """One attempt at one task."""

    def __init__(self, services: Services, claim: Claim, heartbeat: Heartbeat) -> None:
        self.services, self.claim, self.heartbeat = services, claim, heartbeat
        self.task = claim.task
        self.store = services.store
        media = services.settings.media_dir
        self.tmp_dir = media / "tmp" / f"{self.task['id']}.{uuid.uuid4().hex[:8]}"

    def execute(self) -> None:
        log.info("task %s: attempt %d by %s", self.task["id"], self.task["attempts"], self.claim.owner)
        try:
            self._generate()
        except Cancelled:
            self._interrupted()
        except EngineError as exc:
            self._failed(exc.reason, exc.code)
        except Exception as exc:
            log.exception("task %s: engine failure", self.task["id"])
            self._failed(f"The video could not be generated: {type(exc).__name__}: {exc}", "engine_error")
        finally:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def _generate(self) -> None:
        engine = self.services.engines.get(self.task["engine"])
        if engine is None:
            raise EngineError(f"The engine {self.task['engine']!r} is not available on this server.",
                              code="engine_unavailable")
        ctx = TaskContext(self.services, self.claim, self.heartbeat, engine.progress_share)
        private_dir(self.tmp_dir)
        t = self.task
        result = encode_mp4(engine.frames(self._job(), ctx), self.tmp_dir / "video.mp4", width=t["width"],
                            height=t["height"], fps=t["fps"], on_frame=ctx.on_frame,
                            expected_frames=t["n_frames"])
        ctx.check_cancel()
        self.store.set_progress(self.claim, 1.0, status="processing")
        write_webp_thumbnail(result.thumbnail_frame, self.tmp_dir / "thumbnail.webp")
        # made now from tiles kept while encoding, so nobody decodes the MP4 again for it
        write_spritesheet(result.tiles, self.tmp_dir / "spritesheet.jpg")
        self._publish(engine, result.n_frames)

    def _job(self) -> RenderJob:
        t = self.task
        return RenderJob(task_id=t["id"], prompt=t["prompt"], width=t["width"], height=t["height"],
                         n_frames=t["n_frames"], fps=t["fps"], seed=t["seed"], style_id=t["style_id"],
                         params=t["request"], image=self._image())

    def _image(self) -> Path | None:
        items = self.task["inpaint_items"] or []
        if not items:
            return None
        upload = self.store.upload(items[0]["upload_id"])
        path = self.services.settings.data_dir / "uploads" / upload["file"] if upload else None
        if path is None or not path.is_file():
            raise EngineError("The uploaded image of this task no longer exists.", code="upload_missing")
        return path

    def _publish(self, engine, n_frames: int) -> None:
        gen_id = new_id("gen")
        final = private_dir(self.services.settings.media_dir / gen_id)
        private_files(*(self.tmp_dir / name for name in OUTPUTS))
        for name in OUTPUTS:
            os.replace(self.tmp_dir / name, final / name)
        files = {column: f"{gen_id}/{name}" for name, column in OUTPUTS.items()}
        row = self._generation(gen_id, "sora_draft", engine=engine.describe(), n_frames=n_frames,
                               video_bytes=(final / "video.mp4").stat().st_size, **files)
        if not self.store.finish(self.claim, "succeeded", generation=row):
            log.warning("task %s: lease lost before commit; discarding output", self.task["id"])
            shutil.rmtree(final, ignore_errors=True)
        else:
            log.info("task %s: succeeded as %s", self.task["id"], gen_id)

    def _generation(self, gen_id: str, kind: str, *, engine: dict | None = None, **fields) -> dict:
        t = self.task
        meta = {"prompt": t["prompt"], "title": t["title"], "creation_config": creation_config(t),
                "engine": engine, "fps": t["fps"]}
        row = {"id": gen_id, "task_id": t["id"], "user_id": t["user_id"], "kind": kind,
               "created_at": self.store.clock(), "width": t["width"], "height": t["height"],
               "n_frames": None, "video_file": None, "thumbnail_file": None, "spritesheet_file": None,
               "video_bytes": None, "reason_str": None, "error_reason": None, "meta": meta}
        row.update(fields)
        return row

    def _interrupted(self) -> None:
        hb = self.heartbeat
        if hb.lost:
            log.warning("task %s: lease lost; another worker owns it now", self.task["id"])
        elif hb.cancelled:
            self.store.finish(self.claim, "cancelled", failure_reason="task_cancelled")
            log.info("task %s: cancelled", self.task["id"])
        else:  # shutting down: hand the task back untouched, for the next start to take at once
            self.store.release(self.claim)
            log.info("task %s: released on shutdown", self.task["id"])

    def _failed(self, reason: str, code: str) -> None:
        row = self._generation(new_id("gen"), "sora_error", reason_str=reason, error_reason=code)
        self.store.finish(self.claim, "failed", failure_reason=reason, generation=row)
        log.warning("task %s: failed: %s", self.task["id"], reason)
