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
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..engines import AudioTrack, Cancelled, EngineError, RenderJob
from ..media.audio import Timeline, mux
from ..media.audio import read as read_audio
from ..ids import new_id
from ..media.encode import decode_frames, encode_mp4, write_spritesheet, write_webp_thumbnail
from ..media.frames import conform, retime, save_png
from ..media.storage import MediaMissing, StorageError, upload_key
from ..private import private_dir, private_files
from ..server.create import creation_config
from ..server.services import Services
from ..store import Claim
from ..store.db import database_errors, first_line
from .listen import LISTENING_POLL
from .metrics import observe as observe_metrics

log = logging.getLogger("sorakit.worker")
DATABASE_ERRORS = database_errors()

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
        # every variation is a whole video: the bar covers all of them
        self.n_frames = claim.task["n_frames"] * (claim.task.get("n_variants") or 1)
        self.segment_start, self.segment_weight = 0.0, 1.0
        self.encoded_before = 0
        #: the current output's sound, and where the engine's next track starts in it (seconds)
        self.timeline = Timeline()
        self.audio_offset = 0.0
        # A retried attempt starts over, but the bar it shows never drops below what an earlier
        # attempt reached (the official API's progress must not go backwards): it stalls instead.
        self.floor = claim.task["progress"] or 0.0
        self.engine_fraction = 0.0
        self.encoded = 0
        self._last_write = 0.0

    def check_cancel(self) -> None:
        if self.heartbeat.interrupted:
            raise Cancelled(self.claim.task["id"])

    def segment(self, start: float, weight: float) -> None:
        """The engine's next run is this part of all its work (a variation, a shot)."""
        self.segment_start, self.segment_weight = start, weight

    def progress(self, fraction: float) -> None:
        done = self.segment_start + self.segment_weight * min(max(fraction, 0.0), 1.0)
        self.engine_fraction = min(max(done, self.engine_fraction), 1.0)
        self._publish()

    def next_output(self) -> None:
        """The encoder starts another file (the next variation)."""
        self.encoded_before = self.encoded
        self.timeline, self.audio_offset = Timeline(), 0.0

    def audio(self, track: AudioTrack) -> None:
        self.timeline.place(self.audio_offset, track)

    def on_frame(self, count: int) -> None:
        self.encoded = self.encoded_before + count
        self._publish()

    def overall(self) -> float:
        encoded = self.encoded / self.n_frames
        return round(self.share * self.engine_fraction + (1 - self.share) * encoded, 4)

    def _publish(self) -> None:
        now = time.monotonic()
        if now - self._last_write >= PROGRESS_INTERVAL:
            self._last_write = now
            try:
                self.services.store.set_progress(self.claim, max(min(self.overall(), 0.99), self.floor))
            except DATABASE_ERRORS as exc:  # progress is a view: the run goes on, the next write catches up
                log.warning("task %s: progress not written (database: %s)", self.claim.task["id"],
                            first_line(exc))


class Worker(threading.Thread):
    def __init__(self, services: Services, index: int, stopping: threading.Event,
                 poll_interval: float = 0.2, engines: list[str] | None = None) -> None:
        super().__init__(name=f"sorakit-worker-{index}", daemon=True)
        self.services, self.stopping, self.poll_interval = services, stopping, poll_interval
        self.owner = f"{socket.gethostname()}:{os.getpid()}:w{index}:{uuid.uuid4().hex[:8]}"
        #: its row in the workers table: the configured worker name (stable across restarts) or
        #: this host and process
        base = services.settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self.name_in_fleet = f"{base}/w{index}"
        #: the engine and model names it claims tasks for: those it has (or the ones it was told)
        self.engine_names = sorted(engines if engines is not None else services.engines)
        #: the task it runs now, and how many it finished since the last heartbeat of its row
        self.current: str | None = None
        self.finished = 0
        #: its process's WorkListener, on PostgreSQL (set by WorkerPool)
        self.listener = None

    def run(self) -> None:
        self._preload()
        while not self.stopping.is_set():
            try:
                claim = self._claim()
                if claim is None:
                    # Woken by a new task in this process (or, on PostgreSQL, announced by any
                    # process: worker/listen.py); the timeout covers expired leases and, while no
                    # listener runs, other processes' tasks.
                    listening = self.listener is not None and self.listener.listening.is_set()
                    self.services.work_ready.wait(LISTENING_POLL if listening else self.poll_interval)
                    self.services.work_ready.clear()
                    continue
                self.execute(claim)
            except Exception:  # the worker outlives anything a task or the database throws
                log.exception("worker %s: unexpected error", self.owner)
                self.stopping.wait(1.0)

    def _preload(self) -> None:
        for name, engine in self.services.engines.items():
            if self.stopping.is_set():
                return
            started = time.monotonic()
            try:
                if engine.preload():
                    log.info("worker %s: %s loaded and warmed up in %.1f s", self.owner, name,
                             time.monotonic() - started)
            except Exception as exc:  # its tasks fail with the same error, readable, when they run
                log.error("worker %s: %s could not be loaded: %s", self.owner, name, exc)

    def _claim(self) -> Claim | None:
        s = self.services.settings
        return self.services.store.claim(self.owner, s.lease_seconds, s.max_attempts, engines=self.engine_names)

    def execute(self, claim: Claim) -> None:
        heartbeat = Heartbeat(self.services, claim, self.stopping)
        heartbeat.start()
        self.current = claim.task["id"]
        try:
            Run(self.services, claim, heartbeat).execute()
        finally:
            self.current = None
            self.finished += 1
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
        self.marks, self.outcome = {"start": time.monotonic()}, "lost"  # for worker/metrics.py
        #: inputs read from the media storage, by key: fetched once per attempt
        self._inputs: dict[str, Path] = {}

    def execute(self) -> None:
        log.info("task %s: attempt %d by %s", self.task["id"], self.task["attempts"], self.claim.owner)
        try:
            self._generate()
        except Cancelled:
            self._interrupted()
        except EngineError as exc:
            self._failed(exc.reason, exc.code)
        except DATABASE_ERRORS as exc:
            # The database, not the task, failed: never record that as the task's failure. Hand it
            # back if the database answers; if not, the lease runs out and a worker retakes it.
            log.warning("task %s: database unavailable (%s); handing the task back", self.task["id"],
                        first_line(exc))
            try:
                self.outcome = "released" if self.store.release(self.claim) else "lost"
            except DATABASE_ERRORS:
                pass
        except Exception as exc:
            log.exception("task %s: engine failure", self.task["id"])
            self._failed(f"The video could not be generated: {type(exc).__name__}: {self._redact(exc)}",
                         "engine_error")
        finally:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            observe_metrics(self)

    def _redact(self, exc: Exception) -> str:
        """The error's text for its user, without the server's own paths."""
        text = str(exc)
        for folder in (self.services.settings.data_dir, self.services.settings.media_dir):
            text = text.replace(str(folder.resolve()), "<data>").replace(str(folder), "<data>")
        return text[:500]

    def _generate(self) -> None:
        engine = self.services.engines.get(self.task["engine"])
        if engine is None:
            raise EngineError(f"The engine {self.task['engine']!r} is not available on this server.",
                              code="engine_unavailable")
        operation = self.task.get("operation") or "generate"
        reason = engine.unsupported(self._engine_operation())
        if reason:
            raise EngineError(f"This task cannot run here: {reason}.", code="operation_unsupported")
        ctx = TaskContext(self.services, self.claim, self.heartbeat, engine.progress_share)
        private_dir(self.tmp_dir)
        self.wants_audio, self.sound_title, self.sounds = self._wants_audio(engine), engine.sound_label, []
        made = [self._encode(frames, i, ctx) for i, frames in enumerate(self._outputs(operation, engine, ctx))]
        self.marks["render"] = time.monotonic()
        ctx.check_cancel()
        self.store.set_progress(self.claim, 1.0, status="processing")
        for folder, result in made:
            write_webp_thumbnail(result.thumbnail_frame, folder / "thumbnail.webp")
            # made now from tiles kept while encoding, so nobody decodes the MP4 again for it
            write_spritesheet(result.tiles, folder / "spritesheet.jpg")
        self._publish(engine, made)

    def _engine_operation(self) -> str:
        """What the engine is asked to do, as it declares it (``Engine.operations``)."""
        t = self.task
        operation = t.get("operation") or "generate"
        if operation in ("remix", "extend"):
            return operation
        image = any(i.get("kind") == "upload" for i in t["inpaint_items"] or [])
        continuity = operation == "storyboard" and (t.get("inputs") or {}).get("continuity")
        return "image" if image or continuity else "generate"

    def _encode(self, frames, index: int, ctx: TaskContext):
        """One output video: the picture as frames arrive, then its sound (if any engine run or
        source gave one) muxed beside it, exactly as long as the picture."""
        t = self.task
        folder = private_dir(self.tmp_dir / f"v{index}")
        ctx.next_output()
        picture = folder / "picture.mp4"
        result = encode_mp4(frames, picture, width=t["width"], height=t["height"], fps=t["fps"],
                            on_frame=ctx.on_frame, expected_frames=t["n_frames"])
        sound = ctx.timeline.render(result.n_frames / t["fps"])
        if sound is None:
            os.replace(picture, folder / "video.mp4")
        else:
            ctx.check_cancel()
            mux(picture, sound, folder / "video.mp4", seconds=result.n_frames / t["fps"], title=self.sound_title)
            picture.unlink()
        self.sounds.append(sound is not None)
        return folder, result

    def _wants_audio(self, engine) -> bool:
        """Sound when the engine makes it, the server allows it and the request did not turn it off."""
        asked = (self.task.get("request") or {}).get("audio", True)
        off = asked is False or str(asked).strip().lower() in ("false", "0", "off", "no")
        return "audio" in engine.operations() and self.services.settings.audio and not off

    # -- what each operation renders: one frame stream per output video -------------------------
    def _outputs(self, operation: str, engine, ctx: TaskContext) -> Iterator[Iterator[np.ndarray]]:
        if operation == "extend":
            yield self._extended(engine, ctx)
        elif operation == "storyboard":
            yield self._storyboard(engine, ctx)
        else:  # generate or remix, once per variation
            n = self.task.get("n_variants") or 1
            for i in range(n):
                ctx.segment(i / n, 1 / n)
                yield engine.frames(self._job(variant=i, operation=operation), ctx)

    def _job(self, *, variant: int = 0, operation: str = "generate", **changes) -> RenderJob:
        t = self.task
        inputs = t.get("inputs") or {}
        fields = dict(task_id=t["id"], prompt=t["prompt"], width=t["width"], height=t["height"],
                      n_frames=t["n_frames"], fps=t["fps"], seed=t["seed"] + variant, style_id=t["style_id"],
                      params=t["request"], image=self._image(), operation=operation, audio=self.wants_audio)
        if operation == "remix":
            fields.update(source=self._source(), strength=inputs.get("strength"))
        fields.update(changes)
        return RenderJob(**fields)

    def _extended(self, engine, ctx: TaskContext) -> Iterator[np.ndarray]:
        """The source's frames, then the engine's continuation from its last frame, fitted to the
        source's size and frame rate: one timeline, no gap."""
        t, inputs = self.task, self.task["inputs"]
        source, last = self._source(), None
        for last in decode_frames(source):
            yield last
        if last is None:
            raise EngineError("The video this task extends has no frames.", code="source_missing")
        # the source's own sound stays under its frames; the extension's follows it
        source_sound = read_audio(source)
        if source_sound is not None:
            ctx.audio(source_sound)
        ctx.audio_offset = inputs["source_frames"] / t["fps"]
        plan = inputs["engine_plan"]
        job = self._job(operation="extend", prompt=t["prompt"], width=plan["width"], height=plan["height"],
                        n_frames=plan["n_frames"], fps=plan["fps"], source=source,
                        image=save_png(last, self.tmp_dir / "last-frame.png"))
        frames = conform(engine.frames(job, ctx), t["width"], t["height"])
        yield from retime(frames, plan["fps"], t["fps"], inputs["extension_frames"])

    def _storyboard(self, engine, ctx: TaskContext) -> Iterator[np.ndarray]:
        """Each shot in order, joined with cuts; with ``continuity``, a shot starts from the last
        frame of the one before."""
        t, inputs = self.task, self.task["inputs"]
        shots = inputs["shots"]
        total = sum(shot["n_frames"] for shot in shots)
        start, image = 0, None
        for i, shot in enumerate(shots):
            ctx.segment(start / total, shot["n_frames"] / total)
            ctx.audio_offset = start / t["fps"]
            prompt = f"{shot['prompt']}. {inputs['instructions']}" if inputs.get("instructions") else shot["prompt"]
            last = None
            for last in engine.frames(self._job(variant=i, prompt=prompt, n_frames=shot["n_frames"], image=image),
                                      ctx):
                yield last
            if inputs.get("continuity") and last is not None:
                image = save_png(last, self.tmp_dir / f"shot-{i}-last.png")
            start += shot["n_frames"]

    def _source(self) -> Path:
        """The video this task builds on: a finished draft (a post's may be another user's), or a
        video uploaded with the request (the official API's edits)."""
        inputs = self.task.get("inputs") or {}
        key = None
        if inputs.get("source_upload_id"):
            upload = self.store.upload(inputs["source_upload_id"])
            key = upload_key(upload["file"]) if upload else None
        elif inputs.get("source_generation_id"):
            gen = self.store.generation(inputs["source_generation_id"])
            key = gen["video_file"] if gen and gen["video_file"] else None
        path = self._fetch(key)
        if path is None:
            raise EngineError("The video this task builds on was deleted before the task ran.",
                              code="source_missing")
        return path

    def _image(self) -> Path | None:
        # image items only: a source video uploaded for an edit is listed too (so it is kept while
        # the task waits) but read by _source
        items = [i for i in self.task["inpaint_items"] or [] if i.get("kind") == "upload"]
        if not items:
            return None
        upload = self.store.upload(items[0]["upload_id"])
        path = self._fetch(upload_key(upload["file"]) if upload else None)
        if path is None:
            raise EngineError("The uploaded image of this task no longer exists.", code="upload_missing")
        return path

    def _fetch(self, key: str | None) -> Path | None:
        """A local copy of an input (the file itself for local media, a download into this
        attempt's temp folder for a bucket); None when it is gone."""
        if key is None:
            return None
        if key not in self._inputs:
            try:
                self._inputs[key] = self.services.media.fetch(key, self.tmp_dir / "inputs")
            except MediaMissing:
                return None
            except StorageError as exc:
                raise EngineError(f"An input of this task could not be read from the media storage: "
                                  f"{exc.reason}.", code="storage_error") from exc
        return self._inputs[key]

    def _publish(self, engine, made: list) -> None:
        """Move each output into place as its own draft and commit them with the task's end."""
        rows, stored = [], []
        n = len(made)
        media = self.services.media
        for i, (folder, result) in enumerate(made):
            gen_id = new_id("gen")
            stored.append(gen_id)
            private_files(*(folder / name for name in OUTPUTS))
            video_bytes = (folder / "video.mp4").stat().st_size
            try:  # a local folder: a rename; a bucket: an upload (the temp copy is deleted)
                for name in OUTPUTS:
                    media.put(f"{gen_id}/{name}", folder / name)
            except StorageError as exc:
                self._discard(stored)
                raise EngineError(f"The finished video could not be stored: {exc.reason}.",
                                  code="storage_error") from exc
            files = {column: f"{gen_id}/{name}" for name, column in OUTPUTS.items()}
            variant = {"variant": i, "n_variants": n} if n > 1 else {}
            variant["has_audio"] = self.sounds[i]
            row = self._generation(gen_id, "sora_draft", engine=engine.describe(self._engine_operation()),
                                   n_frames=result.n_frames, video_bytes=video_bytes, **files, **variant)
            # variations in order: the first made is the first listed among the task's drafts
            row["created_at"] += i * 1e-3
            rows.append(row)
        if not self._commit(rows):
            log.warning("task %s: lease lost before commit; discarding output", self.task["id"])
            self._discard(stored)
        else:
            self.outcome = "succeeded"
            log.info("task %s: succeeded as %s", self.task["id"], ", ".join(r["id"] for r in rows))

    def _commit(self, rows: list[dict]) -> bool:
        """Record success with its drafts. The video is made and stored: a database that fails now
        is waited for (while the heartbeat keeps the lease), up to the lease's length, rather than
        throwing the work away."""
        deadline = time.monotonic() + self.services.settings.lease_seconds
        pause = 0.25
        while True:
            try:
                return self.store.finish(self.claim, "succeeded", generation=rows)
            except DATABASE_ERRORS as exc:
                if time.monotonic() + pause > deadline or self.heartbeat.lost:
                    raise
                log.warning("task %s: could not record the result yet (%s); retrying", self.task["id"],
                            first_line(exc))
                time.sleep(pause)
                pause = min(pause * 2, 4.0)

    def _discard(self, gen_ids: list[str]) -> None:
        """Delete what this attempt stored but will not commit (maintenance catches any left)."""
        for gen_id in gen_ids:
            try:
                self.services.media.delete_prefix(gen_id)
            except StorageError as exc:
                log.warning("task %s: could not delete %s: %s", self.task["id"], gen_id, exc)

    def _generation(self, gen_id: str, kind: str, *, engine: dict | None = None, variant: int | None = None,
                    n_variants: int | None = None, has_audio: bool = False, **fields) -> dict:
        t = self.task
        meta = {"prompt": t["prompt"], "title": t["title"], "creation_config": creation_config(t),
                "engine": engine, "fps": t["fps"], "operation": t.get("operation") or "generate"}
        meta["has_audio"] = has_audio
        if variant is not None:  # each variation's own seed: the one that makes it again
            meta.update(variant=variant, n_variants=n_variants)
            meta["creation_config"]["seed"] = t["seed"] + variant
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
            ended = self.store.finish(self.claim, "cancelled", failure_reason="task_cancelled")
            self.outcome = "cancelled" if ended else "lost"
            log.info("task %s: cancelled", self.task["id"])
        else:  # shutting down: hand the task back untouched, for the next start to take at once
            self.outcome = "released" if self.store.release(self.claim) else "lost"
            log.info("task %s: released on shutdown", self.task["id"])

    def _failed(self, reason: str, code: str) -> None:
        row = self._generation(new_id("gen"), "sora_error", reason_str=reason, error_reason=code)
        ended = self.store.finish(self.claim, "failed", failure_reason=reason, generation=row)
        self.outcome = "failed" if ended else "lost"
        log.warning("task %s: failed: %s", self.task["id"], reason)
