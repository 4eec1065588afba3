"""Run a batch: submit rows as fast as the server allows, follow them all with one poll a cycle,
download each video as it finishes, and journal every step first so a killed run resumes.

    from sorakit.batch import Journal, load_rows, run_batch
    with Journal("out/.sorakit-batch-prompts.sqlite") as journal:
        result = run_batch(client, load_rows("prompts.txt"), journal, "out")
    result.exit_code  # 0 all done, 1 some failed or left, 4 stopped by the daily limit

Nothing is submitted twice: a row's Idempotency-Key and exact request body are committed before
the request goes out, so a run that died mid-request sends the same key again (sorakit replays
the original task). Before resending such a row, the server's recent tasks are searched for one
this row made, which covers servers that ignore the key. The concurrency cap is learned from the
server's 429 ``too_many_concurrent_tasks``; the daily limit (``rate_limit_exhausted``) stops new
submissions while the running ones finish.

A server that goes away (a restart, a network cut) is waited out for the client's
``RetryPolicy.max_outage`` seconds, each attempt reported as an ``outage`` event; an error that
outlasts it stops the run (the journal keeps everything for the next one).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..client import errors, files
from ..client.core import Core, Watch, epoch_seconds
from ..client.outage import Outage, OutageEvent
from ..client.sync import SoraClient, draft_with_task, sidecar_data
from .journal import Entry, Journal
from .rows import Row

EXIT_OK, EXIT_FAILED, EXIT_DAILY_LIMIT, EXIT_INTERRUPTED = 0, 1, 4, 130
BUSY_RETRY = 5.0  # seconds to wait after a 429 without Retry-After when none of ours is running
FIND_CLOCK_SKEW = 2.0
MAX_DRAFTS_SEARCHED = 300  # for a row that may have been sent before a crash
CAP_MEMORY = 3600.0  # seconds a learned concurrency cap is trusted by the next run of the batch


@dataclass
class Event:
    """What ``run_batch`` reports to ``on_event`` as it goes.

    ``kind``: ``warning``, ``info``, ``state`` (a row changed state), ``progress`` (a running
    task moved), ``cap`` (the concurrency cap was learned), ``daily_limit`` (the quota ran out),
    ``outage`` (an attempt failed while the server is out, or the server is back: ``message``
    says which).
    """

    kind: str
    message: str = ""
    entry: Entry | None = None


@dataclass
class BatchResult:
    entries: list[Entry]
    out_dir: Path
    journal_path: Path
    warnings: list[str] = field(default_factory=list)
    daily_limit_hit: bool = False
    quota_resets_at: float | None = None  # epoch seconds, when the daily limit was hit
    learned_cap: int | None = None
    max_in_flight_seen: int = 0
    busy_refusals: int = 0  # 429 too_many_concurrent_tasks answers met (each waited out)

    def count(self, state: str) -> int:
        return sum(1 for e in self.entries if e.state == state)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def pending(self) -> int:
        """Rows not finished: never sent, or sent and not yet downloaded."""
        return len(self.entries) - self.done - self.failed

    @property
    def exit_code(self) -> int:
        if self.daily_limit_hit and self.pending:
            return EXIT_DAILY_LIMIT
        return EXIT_OK if self.done == len(self.entries) else EXIT_FAILED

    def as_dict(self) -> dict[str, Any]:
        resets = self.quota_resets_at
        return {
            "total": len(self.entries), "done": self.done, "failed": self.failed, "pending": self.pending,
            "exit_code": self.exit_code, "out_dir": str(self.out_dir), "journal": str(self.journal_path),
            "daily_limit_reached": self.daily_limit_hit,
            "quota_resets_at": datetime.fromtimestamp(resets).astimezone().isoformat() if resets else None,
            "quota_resets_in_seconds": max(round(resets - time.time()), 0) if resets else None,
            "learned_concurrency": self.learned_cap, "max_in_flight": self.max_in_flight_seen,
            "busy_refusals": self.busy_refusals, "warnings": self.warnings,
            "rows": [{"index": e.idx, "line": e.line, "prompt": e.prompt, "state": e.state,
                      "task_id": e.task_id, "generation_id": e.gen_id, "output": e.output,
                      "sha256": e.sha256, "reason": e.reason} for e in self.entries],
        }


def run_batch(client: SoraClient, rows: Iterable[Row], journal: Journal | str | Path,
              out_dir: str | Path = ".", template: str = files.DEFAULT_TEMPLATE, *,
              defaults: dict[str, Any] | None = None, max_in_flight: int | None = None,
              retry_failed: bool = False, check_quota: bool = True, poll_interval: float | None = None,
              on_event: Callable[[Event], None] | None = None) -> BatchResult:
    """Make a video for every row; returns when each is done or failed, or the daily limit hit.

    ``defaults`` fill request fields a row leaves unset (``orientation``, ``size``, ``n_frames``,
    ``model``, ``style_id``); ``max_in_flight`` is an upper bound on tasks at once (the server's
    own cap is learned either way); ``poll_interval`` fixes the seconds between polls (default:
    the client's 2 to 3 s, slower while nothing moves). Raises ``KeyboardInterrupt``,
    authentication errors, and transport or server errors that outlasted the client's
    ``max_outage``: the journal is consistent at every instant, so running again resumes.
    """
    owned = not isinstance(journal, Journal)
    jr = Journal(journal) if owned else journal
    try:
        runner = _Runner(client, jr, Path(out_dir), template, defaults or {}, max_in_flight,
                         poll_interval, on_event)
        with runner.relaying_outages():
            return runner.run(list(rows), retry_failed, check_quota)
    finally:
        if owned:
            jr.close()


def check_template(template: str) -> None:
    """Raise ``files.TemplateError`` now rather than after a video was made."""
    files.render(template, task_id="task_x", gen_id="gen_x", prompt="p", index=1)


class _Runner:
    def __init__(self, client: SoraClient, journal: Journal, out_dir: Path, template: str,
                 defaults: dict[str, Any], max_in_flight: int | None, poll_interval: float | None,
                 on_event: Callable[[Event], None] | None) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.client, self.journal, self.template = client, journal, template
        self.out_dir = out_dir.expanduser().resolve()
        self.defaults = {k: v for k, v in defaults.items() if v is not None}
        self.limit = self.cap = max_in_flight
        self.poll_interval = poll_interval
        self.on_event = on_event
        self.queue: deque[Entry] = deque()
        self.watches: dict[str, tuple[Watch, Entry]] = {}
        self.hold_until = 0.0  # after a 429: no new submission before this ...
        self.hold_slots = 0  # ... unless fewer than this many of ours are still running
        self.throttled: Outage | None = None  # creates refused by a 429 that names no limit
        self.interval: float | None = None
        self.result = BatchResult([], self.out_dir, journal.path.resolve())

    # -- reporting ----------------------------------------------------------------------------
    @contextmanager
    def relaying_outages(self) -> Iterator[None]:
        """The client's outage reports become batch events (still reaching whoever listened before)."""
        core = self.client.core
        before = core.on_outage

        def relay(event: OutageEvent) -> None:
            if before:
                before(event)
            self.emit("outage", event.message)

        core.on_outage = relay
        try:
            yield
        finally:
            core.on_outage = before

    def emit(self, kind: str, message: str = "", entry: Entry | None = None) -> None:
        if kind == "warning":
            self.result.warnings.append(message)
        if self.on_event:
            self.on_event(Event(kind, message, entry))

    def move(self, entry: Entry, state: str, detail: str | None = None, **changes: Any) -> None:
        self.journal.update(entry, detail, state=state, **changes)
        self.emit("state", detail or state, entry)

    # -- the whole run --------------------------------------------------------------------------
    def run(self, rows: list[Row], retry_failed: bool, check_quota: bool) -> BatchResult:
        check_template(self.template)
        for row in rows:
            if row.output:
                check_template(row.output)
        for warning in self.journal.sync(rows):
            self.emit("warning", warning)
        entries = self.result.entries = self.journal.entries
        if retry_failed:
            for entry in (e for e in entries if e.state == "failed"):
                self.move(entry, "pending", "retry requested", idem_key=None, body=None, task_id=None,
                          gen_id=None, task_status=None, progress=None, output=None, sha256=None,
                          reason=None, submitted_at=None)
        self.queue.extend(e for e in entries if e.state == "submitting")
        self.queue.extend(e for e in entries if e.state == "pending")
        for entry in (e for e in entries if e.state == "submitted"):
            self.watches[entry.task_id] = (Watch(entry.task_id, seen=True), entry)
        self.recall_cap()
        if self.queue and check_quota:
            self.check_quota()
        if self.watches:  # what the last run left running may have finished: free those slots first
            self.client.poll([w for w, _ in self.watches.values()])
            self.collect()
        self.loop()
        return self.result

    def recall_cap(self) -> None:
        """Start from the cap a recent run learned (a resumed batch need not meet the 429 again)."""
        if self.limit is not None:
            return
        cap, _, when = (self.journal.get_meta("learned_cap") or "").partition("@")
        if cap.isdigit() and when and time.time() - float(when) < CAP_MEMORY:
            self.cap = self.result.learned_cap = int(cap)

    def check_quota(self) -> None:
        try:
            usage = self.client.usage()
        except errors.SoraError as exc:
            if _fatal(exc):
                raise
            self.emit("warning", f"could not read the remaining quota ({exc.message})")
            return
        balance = (usage or {}).get("rate_limit_and_credit_balance") or {}
        remaining = balance.get("estimated_num_videos_remaining")
        if isinstance(remaining, int) and len(self.queue) > remaining:
            resets = balance.get("access_resets_in_seconds")
            soon = isinstance(resets, (int, float)) and resets > 0
            when = f"; it resets in {duration_words(resets)}" if soon else ""
            self.emit("warning", f"this batch has {len(self.queue)} video(s) to make but the daily quota has "
                                 f"{remaining} left{when}: the rest will stay pending")

    def loop(self) -> None:
        while True:
            self.submit_ready()
            if not self.watches:
                if not self.queue or self.result.daily_limit_hit:
                    return
                time.sleep(max(self.hold_until - time.monotonic(), 0.05))
                continue
            changed = self.client.poll([w for w, _ in self.watches.values()])
            freed = self.collect()
            if freed and self.may_submit():
                continue  # fill the freed slots at once
            time.sleep(self.next_sleep(changed))

    def next_sleep(self, changed: bool) -> float:
        if self.poll_interval is not None:
            interval = self.poll_interval
        else:
            interval = self.interval = self.client.core.next_interval(self.interval, changed)
        if self.queue and not self.result.daily_limit_hit and self.hold_until > time.monotonic():
            interval = min(interval, max(self.hold_until - time.monotonic(), 0.05))
        return interval

    # -- submitting ---------------------------------------------------------------------------
    def may_submit(self) -> bool:
        if not self.queue or self.result.daily_limit_hit:
            return False
        if self.cap is not None and len(self.watches) >= self.cap:
            return False
        return time.monotonic() >= self.hold_until or len(self.watches) < self.hold_slots

    def submit_ready(self) -> None:
        while self.may_submit():
            entry = self.queue[0]
            if self.submit(entry):
                self.queue.popleft()
                self.result.max_in_flight_seen = max(self.result.max_in_flight_seen, len(self.watches))
            elif entry.state in ("pending", "submitting"):
                return  # busy, out of quota or a transient error: try again later
            else:
                self.queue.popleft()  # refused for good

    def body_for(self, entry: Entry) -> dict[str, Any]:
        return Core.create_body(entry.prompt, **{**self.defaults, **entry.fields})

    def submit(self, entry: Entry) -> bool:
        """Send one row; True once it has a task. Leaves the row pending, submitting or failed otherwise."""
        maybe_sent = entry.state == "submitting"  # left so by a killed run or a lost answer
        if entry.idem_key is None or entry.body is None:
            self.move(entry, "submitting", "key chosen", idem_key=uuid.uuid4().hex,
                      body=self.body_for(entry), submitted_at=time.time())
        elif entry.state != "submitting":
            self.move(entry, "submitting", "sending again with the same key")
        if maybe_sent:
            found = self.find_created(entry)
            if found:
                self.attach(entry, found, "found on the server: adopted, not sent again")
                return True
        body = dict(entry.body)
        try:
            task = self.client.create(body.pop("prompt"), idempotency_key=entry.idem_key, **body)
        except errors.ConcurrencyLimitError as exc:
            self.move(entry, "pending", "server busy (429 too_many_concurrent_tasks)")
            self.busy(exc)
        except errors.DailyLimitError as exc:
            self.move(entry, "pending", "daily limit reached (429 rate_limit_exhausted)")
            self.daily_limit(exc)
        except (errors.BadRequestError, errors.ConflictError) as exc:
            self.move(entry, "failed", "refused", reason=exc.message)
        except errors.RateLimitError as exc:  # a 429 naming no limit (create waits out the rest)
            # timed like an outage (the warning below tells of it: no outage report as well)
            self.throttled = self.throttled or Outage(self.client.core.retry)
            delay = self.throttled.pause(exc)  # raises once it has lasted max_outage
            self.hold_until, self.hold_slots = time.monotonic() + delay, 0
            self.emit("warning", f"row {entry.idx}: could not submit ({exc.message}); trying again "
                                 f"in {delay:.0f} s with the same Idempotency-Key")
        else:
            self.throttled = None
            self.attach(entry, task, "submitted")
            return True
        return False

    def attach(self, entry: Entry, task: dict, detail: str) -> None:
        self.move(entry, "submitted", detail, task_id=task["id"], task_status=task.get("status"))
        self.watches[entry.task_id] = (Watch(entry.task_id), entry)

    def busy(self, exc: errors.ConcurrencyLimitError) -> None:
        """Learn the cap from the 429 and wait for one of ours to finish (or Retry-After)."""
        self.result.busy_refusals += 1
        mine = len(self.watches)
        learned = max(exc.in_progress or mine, 1)
        cap = min(learned, self.limit) if self.limit else learned
        self.journal.set_meta("learned_cap", f"{learned}@{time.time()}")
        if cap != self.cap:
            self.cap = self.result.learned_cap = cap
            self.emit("cap", f"the server runs at most {cap} of your videos at once; "
                             f"keeping {cap} in flight")
        self.hold_until = time.monotonic() + (exc.retry_after or BUSY_RETRY)
        self.hold_slots = mine

    def daily_limit(self, exc: errors.DailyLimitError) -> None:
        seconds = exc.retry_after
        if seconds is None:
            try:
                balance = self.client.usage().get("rate_limit_and_credit_balance") or {}
                seconds = balance.get("access_resets_in_seconds")
            except errors.SoraError:
                seconds = None
        self.result.daily_limit_hit = True
        self.result.quota_resets_at = time.time() + seconds if seconds else None
        when = f" at {_clock(self.result.quota_resets_at)} (in {duration_words(seconds)})" if seconds else ""
        self.emit("daily_limit", f"daily limit reached: no new videos until the quota resets{when}; "
                                 f"finishing the {len(self.watches)} running")

    def find_created(self, entry: Entry) -> dict | None:
        """A task this row made before a crash, for servers that ignore Idempotency-Key."""
        since = (entry.submitted_at or time.time()) - FIND_CLOCK_SKEW
        claimed = {e.task_id for e in self.journal.recorded() if e.task_id}
        frames = (entry.body or {}).get("n_frames")

        def fits(item: dict, id_key: str) -> bool:
            return (item.get("prompt") == entry.body["prompt"] and epoch_seconds(item.get("created_at")) >= since
                    and item.get(id_key) not in claimed
                    and (item.get("n_frames") in (None, frames)))
        try:
            for task in self.client.pending() or []:
                if isinstance(task, dict) and fits(task, "id"):
                    return {"id": task["id"], "status": task.get("status")}
            # newest first: stop at the first draft made before the row was sent
            for draft in itertools.islice(self.client.drafts(), MAX_DRAFTS_SEARCHED):
                if 0 < epoch_seconds(draft.get("created_at")) < since:
                    break
                if fits(draft, "task_id") and draft.get("task_id"):
                    return {"id": draft["task_id"], "status": "succeeded"}
        except errors.SoraError as exc:
            if _fatal(exc):
                raise
        return None  # not found (or cannot tell): the same Idempotency-Key makes resending safe

    # -- following and downloading -----------------------------------------------------------------
    def collect(self) -> int:
        """Note progress; finish (download or fail) every watch that is done. Returns how many."""
        finished = 0
        for task_id, (watch, entry) in list(self.watches.items()):
            task = watch.task or {}
            progress = task.get("progress_pct")
            changes = {k: v for k, v in (("task_status", watch.status), ("progress", progress))
                       if v is not None and getattr(entry, k) != v}
            if changes and not watch.done:
                self.journal.update(entry, **changes)
                self.emit("progress", watch.status or "", entry)
            if not watch.done:
                continue
            del self.watches[task_id]
            finished += 1
            if watch.error is None:
                self.finish(entry, watch.task)
            else:
                reason = getattr(watch.error, "reason", None) or watch.error.message
                self.move(entry, "failed", "task ended without a video", task_status=watch.status,
                          reason=reason)
        return finished

    def output_path(self, entry: Entry, task: dict, gen_id: str | None) -> Path:
        if entry.output:
            return Path(entry.output)  # chosen by an earlier attempt: keep it
        path = self.out_dir / files.render(entry.template or self.template, task_id=task["id"],
                                           gen_id=gen_id, prompt=entry.prompt, index=entry.idx)
        taken = {e.output for e in self.result.entries if e.output and e is not entry}
        if str(path) in taken:
            path = path.with_name(f"{path.stem}-{entry.idx:03d}{path.suffix}")
        return path

    def finish(self, entry: Entry, task: dict) -> None:
        draft = (task.get("generations") or [{}])[0]
        gen_id = draft.get("id") or draft.get("generation_id")
        path = self.output_path(entry, task, gen_id)
        self.journal.update(entry, "downloading", gen_id=gen_id, task_status=task.get("status"),
                            progress=1.0, output=str(path))
        self.emit("progress", "downloading", entry)
        try:
            sha = self.client.download(draft_with_task(draft, task), path)
        except (errors.DownloadError, errors.NotFoundError) as exc:  # an outage it outlasted stops the run
            self.journal.update(entry, "download failed", reason=f"download failed: {exc.message}")
            self.emit("warning", f"row {entry.idx}: the download of {entry.task_id} failed ({exc.message}); "
                                 "it stays submitted: run again to fetch it")
            return
        data = sidecar_data(self.client.base_url, task, draft, entry.body or {}, path, sha,
                            entry.submitted_at or time.time())
        data["batch"] = {"journal": str(self.journal.path), "row": entry.idx, "line": entry.line}
        files.write_sidecar(path, data)
        self.move(entry, "done", "downloaded", sha256=sha, reason=None)


def _fatal(exc: errors.SoraError) -> bool:
    """Errors a best-effort lookup must not swallow: bad credentials, and a server out for good."""
    return isinstance(exc, errors.AuthenticationError) or exc.outage is not None


def duration_words(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _clock(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M %Z") if epoch else "?"


__all__ = ["EXIT_DAILY_LIMIT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "BatchResult", "Event",
           "check_template", "duration_words", "run_batch"]
