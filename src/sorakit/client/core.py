"""The client's logic, written once as generators of steps (see ``steps.py``).

Works against any server of PROTOCOL.md, not only sorakit: finished tasks may stay in
``pending/v2`` (the seed, sorakit's default) or vanish from it (the live service); either way a
task is resolved through ``tasks/{id}/v2`` and, failing that, the drafts list.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import datetime
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from . import errors
from .outage import Outage, OutageEvent
from .steps import Reply, RetryPolicy, Send, Sleep

Flow = Generator[Any, Any, Any]
SUCCEEDED = ("succeeded", "complete", "completed")
TERMINAL = (*SUCCEEDED, "failed", "cancelled", "canceled")
CREATE_FIELDS = (
    "kind", "prompt", "title", "orientation", "size", "audio_caption", "audio_transcript", "cameo_ids",
    "cameo_replacements", "inpaint_items", "metadata", "model", "n_frames", "project_id",
    "remix_target_id", "storyboard_id", "style_id", "video_caption",
)
CREATE_PATH = "/backend/nf/create"
BULK_CREATE_PATH = "/backend/nf/bulk_create"  # what the web page called when nsamples > 1
STORYBOARD_PATH = "/backend/nf/create/storyboard"
EXTEND_PATH = "/backend/project_y/profile/drafts/{gen_id}/long_video_extension"
POST_PATH = "/backend/project_y/post"
REMIX_FROM_SOURCE = ("orientation", "size", "n_frames", "model")  # a remix's defaults are its source's
VIDEO_KINDS = (None, "sora_draft")  # draft kinds that hold a video (others are refusals, errors)
DRAFT_PAGE = 15  # what the web page asked for; other servers may cap lower than sorakit's 500
DRAFT_PAGES = 20
ABSENT_GRACE = 2  # polls a brand-new task may be missing from pending before we go looking
MISSING_AFTER = 120.0  # seconds a task may be nowhere before it counts as lost


@dataclass
class Credentials:
    token: str | None = None
    cookie: str | None = None
    device_id: str | None = None
    sentinel_token: str | None = None
    user_agent: str | None = None

    def headers(self, write: bool = False) -> dict[str, str]:
        found = {"Authorization": f"Bearer {self.token}" if self.token else None,
                 "Cookie": self.cookie, "oai-device-id": self.device_id, "User-Agent": self.user_agent,
                 "openai-sentinel-token": self.sentinel_token if write else None}
        return {k: v for k, v in found.items() if v}

    def token_exp(self) -> float | None:
        import jwt  # only when an error answer needs it: not at every command's start

        try:
            return float(jwt.decode(self.token or "", options={"verify_signature": False})["exp"])
        except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
            return None


@dataclass
class Watch:
    """A task being waited on, and what the poller knows of it."""

    task_id: str
    started: float = field(default_factory=time.time)
    seen: bool = False
    absent: int = 0
    task: dict | None = None
    done: bool = False
    error: errors.SoraError | None = None

    @property
    def status(self) -> str | None:
        return self.task.get("status") if self.task else None


def is_transient(exc: errors.SoraError) -> bool:
    return isinstance(exc, (errors.TransportError, errors.RateLimitError, errors.ServerError))


class Core:
    def __init__(self, base_url: str, credentials: Credentials, retry: RetryPolicy,
                 poll_interval: tuple[float, float] = (2.0, 3.0), poll_max: float = 10.0,
                 on_outage: Callable[[OutageEvent], None] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.retry = retry
        self.poll_interval = poll_interval
        self.poll_max = poll_max
        #: told of every failed attempt during an outage, and of the first answer after one
        self.on_outage = on_outage
        #: when the current outage began (monotonic), for the "back" report; shared by every
        #: request of this client, so concurrent waits report one outage, not one each
        self.down_since: float | None = None
        #: ids this client already got back from create: a search after a lost answer never
        #: adopts one of them, so the same prompt twice makes two videos
        self.created_ids: set[str] = set()

    # -- outages --------------------------------------------------------------------------
    def outage(self) -> Outage:
        """A fresh outage clock for one retry loop; its reports go to ``on_outage``."""
        return Outage(self.retry, self._waiting)

    def _waiting(self, event: OutageEvent) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic() - event.elapsed
        if self.on_outage:
            self.on_outage(event)

    def answered(self) -> None:
        """The server gave a real answer: an outage in progress is over."""
        if self.down_since is None:
            return
        elapsed, self.down_since = time.monotonic() - self.down_since, None
        if self.on_outage:
            self.on_outage(OutageEvent("back", 0, elapsed))

    # -- requests -------------------------------------------------------------------------
    def send_once(self, method: str, path: str, *, params=None, json=None, headers=None) -> Flow:
        """One request; an error answer becomes its exception. Returns the parsed body."""
        creds = self.credentials.headers(write=method != "GET")
        reply: Reply = yield Send(method, self.base_url + path, params=params, json=json,
                                  headers={**creds, **(headers or {})})
        if reply.status >= 400:
            exc = errors.from_response(reply.status, reply.body, reply.headers, self.credentials.token_exp())
            if not is_transient(exc):
                self.answered()
            raise exc
        self.answered()
        if reply.status >= 300:  # credentials never follow a redirect; say where it pointed
            where = reply.headers.get("location", "?")
            raise errors.APIError(f"the server redirected {path} to {where}: check the server URL "
                                  "(http vs https, path prefix)", status=reply.status)
        if method == "DELETE" and reply.body in ("", None):
            return {}  # 204 No Content, or an empty 200
        if not isinstance(reply.body, (dict, list)):
            raise errors.APIError(f"the server answered {path} with something that is not JSON: "
                                  f"{str(reply.body)[:80]!r}", status=reply.status)
        return reply.body

    def get(self, path: str, params=None, *, once: bool = False) -> Flow:
        """A GET, retried through an outage (transport errors, 429, 5xx); ``once``: one try only."""
        outage = self.outage()
        while True:
            try:
                return (yield from self.send_once("GET", path, params=params))
            except errors.SoraError as exc:
                if once or not is_transient(exc):
                    raise
                pause = outage.pause(exc)
            yield Sleep(pause)

    # -- endpoints ------------------------------------------------------------------------
    def pending(self, *, once: bool = False) -> Flow:
        body = yield from self.get("/backend/nf/pending/v2", once=once)
        if not isinstance(body, list):
            raise errors.APIError("pending/v2 answered something other than a list of tasks", status=200)
        return body

    def task(self, task_id: str) -> Flow:
        return (yield from self.get(f"/backend/nf/tasks/{task_id}/v2"))

    def usage(self) -> Flow:
        return (yield from self.get("/backend/nf/check"))

    def draft(self, gen_id: str) -> Flow:
        body = yield from self.get(f"/backend/project_y/profile/drafts/v2/{gen_id}")
        return body.get("draft", body) if isinstance(body, dict) else body

    def drafts_page(self, limit: int = DRAFT_PAGE, cursor: str | None = None, *, once: bool = False) -> Flow:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return (yield from self.get("/backend/project_y/profile/drafts/v2", params, once=once))

    def iter_drafts(self, visit: Callable[[dict], bool], limit: int = DRAFT_PAGE,
                    max_pages: int | None = None, *, once: bool = False) -> Flow:
        """Call ``visit`` on every draft, newest first, until it returns True; returns that draft."""
        cursor, pages = None, 0
        while max_pages is None or pages < max_pages:
            page = yield from self.drafts_page(limit, cursor, once=once)
            pages += 1
            for item in page.get("items") or []:
                if visit(item):
                    return item
            cursor = page.get("cursor")
            if not cursor:
                return None
        return None

    def cancel(self, task_id: str) -> Flow:
        return (yield from self.send_once("POST", f"/backend/nf/tasks/{task_id}/cancel"))

    # -- posts ------------------------------------------------------------------------------
    def share(self, gen_id: str, text: str = "") -> Flow:
        """Post a draft under a public permalink; returns the post (``{"id": "s_...", "permalink", ...}``).

        Sent once, no retry: a post is not idempotent, and a lost answer leaves at most one post.
        """
        body = {"attachments_to_create": [{"generation_id": gen_id, "kind": "sora"}], "post_text": text or ""}
        answer = yield from self.send_once("POST", POST_PATH, json=body)
        post = answer.get("post") if isinstance(answer, dict) else None
        if not isinstance(post, dict) or not post.get("id"):
            raise errors.APIError(f"{POST_PATH} answered without a post: {str(answer)[:80]!r}", status=200)
        return post

    def post(self, post_id: str) -> Flow:
        body = yield from self.get(f"{POST_PATH}/{quote(post_id, safe='')}")
        return body.get("post", body) if isinstance(body, dict) else body

    def unshare(self, post_id: str) -> Flow:
        return (yield from self.send_once("DELETE", f"{POST_PATH}/{quote(post_id, safe='')}"))

    # -- create -----------------------------------------------------------------------------
    @staticmethod
    def create_body(prompt: str, *, variants: int | None = None, **fields: Any) -> dict[str, Any]:
        """Every key the web page sent, nulls included, then the caller's extras.

        ``variants`` (N > 1) asks for N videos of the prompt in one task (``nsamples``).
        """
        body: dict[str, Any] = {name: None for name in CREATE_FIELDS}
        body.update(kind="video", prompt=prompt, inpaint_items=[], model="sy_8", orientation="portrait",
                    size="small", n_frames=300)
        body.update({k: v for k, v in fields.items() if v is not None or k not in body})
        if variants is not None:
            if isinstance(variants, bool) or not isinstance(variants, int) or variants < 1:
                raise ValueError(f"variants must be a whole number, 1 or more (got {variants!r})")
            if variants > 1:
                body["nsamples"] = variants
        return body

    @staticmethod
    def create_path(body: dict[str, Any]) -> str:
        """Where a create body goes: ``bulk_create`` for several variants, as the web page did."""
        return BULK_CREATE_PATH if (body.get("nsamples") or 1) > 1 else CREATE_PATH

    @staticmethod
    def remix_body(target_id: str, prompt: str, *, strength: float | None = None, **fields: Any) -> dict[str, Any]:
        """A create body that remixes a draft (``gen_...``) or a post (``s_...``)."""
        if not target_id:
            raise ValueError("remix needs the id of a draft (gen_...) or post (s_...)")
        if strength is not None:
            fields["remix_strength"] = strength
        body = Core.create_body(prompt, remix_target_id=target_id, **fields)
        for name in REMIX_FROM_SOURCE:  # not given: the server takes the source's
            if fields.get(name) is None:
                body[name] = None
        return body

    @staticmethod
    def extend_body(seconds: float, prompt: str = "") -> dict[str, Any]:
        """``long_video_extension``'s body: ``seconds`` more of the draft, where ``prompt`` takes it."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"extend needs a number of seconds to add, more than 0 (got {seconds!r})")
        return {"user_prompt": prompt or "", "extension_duration_s": seconds, "enable_rewrite": False}

    @staticmethod
    def storyboard_body(shots: Iterable[Any], *, instructions: str | None = None,
                        **fields: Any) -> dict[str, Any]:
        """A storyboard create body: the structured ``shots`` (sorakit) and, for servers that
        only read the web app's text form, the same timeline as the prompt."""
        parsed = storyboard_shots(shots)
        total = sum(s["duration_s"] for s in parsed)
        if fields.get("n_frames") is None:
            fields["n_frames"] = round(total * 30)
        body = Core.create_body(timeline_text(parsed, instructions), **fields)
        body["shots"] = parsed
        if instructions:
            body["instructions"] = instructions
        return body

    def create(self, body: dict[str, Any], idempotency_key: str | None = None, *, path: str | None = None,
               match_prompt: str | None | bool = True) -> Flow:
        """Submit once, even across lost answers.

        An ``Idempotency-Key`` makes a retry safe against sorakit, so transport errors and 5xx
        are retried through an outage like a GET. Against a server that ignores the key, before
        each retry we look for a task with this prompt created since the first attempt, and adopt
        it instead of submitting again.

        ``path``: where to post (default: ``create_path(body)``). ``match_prompt``: the prompt
        the server will record for the task, for that search (True: ``body["prompt"]``; None:
        unknowable, so no search: only the Idempotency-Key protects the retry).
        """
        path = path or self.create_path(body)
        prompt = body.get("prompt") if match_prompt is True else match_prompt or None
        key = idempotency_key or uuid.uuid4().hex
        outage, since = self.outage(), time.time()
        while True:
            try:
                created = yield from self.send_once("POST", path, json=body, headers={"Idempotency-Key": key})
                break
            except errors.SoraError as exc:
                if not isinstance(exc, (errors.TransportError, errors.ServerError)):
                    raise
                pause = outage.pause(exc)
                # A 503 "heavy load" refused the request outright; anything else may have created it.
                unsure = not isinstance(exc, errors.OverloadedError)
            yield Sleep(pause)
            if unsure and prompt:
                created = yield from self.find_created(prompt, since)
                if created is not None:
                    break
        if not isinstance(created, dict) or not created.get("id"):
            raise errors.APIError(f"{path} answered without a task id: {str(created)[:80]!r}", status=200)
        self.created_ids.add(created.get("id"))
        return created

    def extend(self, gen_id: str, seconds: float, prompt: str = "", idempotency_key: str | None = None) -> Flow:
        """``seconds`` more of draft ``gen_id``: a task whose one draft is the source plus the extension."""
        body = self.extend_body(seconds, prompt)
        # an empty prompt continues the source's, which the server records: then no search by prompt
        return (yield from self.create(body, idempotency_key, path=EXTEND_PATH.format(gen_id=quote(gen_id, safe="")),
                                       match_prompt=prompt or None))

    def find_created(self, prompt: str, since: float) -> Flow:
        """A task with this prompt created at or after ``since`` (pending first, then drafts).

        One try each, no retries: while the server is out, create's own retry loop keeps the
        clock, and its next attempt carries the same Idempotency-Key anyway.
        """
        try:
            for task in (yield from self.pending(once=True)) or []:
                if self._is_ours(task.get("id"), task, prompt, since):
                    return {"id": task["id"], "status": task.get("status"), "prompt": prompt}
            draft = yield from self.iter_drafts(
                lambda d: self._is_ours(d.get("task_id"), d, prompt, since), max_pages=1, once=True)
        except errors.SoraError as exc:
            if is_transient(exc):
                return None  # cannot tell yet; the retry carries the same Idempotency-Key
            raise
        return {"id": draft["task_id"], "status": "succeeded", "prompt": prompt} if draft else None

    def _is_ours(self, task_id: str | None, item: dict, prompt: str, since: float) -> bool:
        # 2 s of slack for a server clock slightly behind ours.
        return (task_id not in self.created_ids and item.get("prompt") == prompt
                and epoch_seconds(item.get("created_at")) >= since - 2)

    # -- following tasks ----------------------------------------------------------------------
    def poll_cycle(self, watches: Iterable[Watch]) -> Flow:
        """One ``pending/v2`` request for every open watch; resolve the ones that left it.

        Returns True when anything changed (a status or progress), for the poll interval.
        """
        open_ = [w for w in watches if not w.done]
        if not open_:
            return False
        listed = {t.get("id"): t for t in (yield from self.pending()) or [] if isinstance(t, dict)}
        changed = False
        for w in open_:
            task = listed.get(w.task_id)
            before = (w.status, (w.task or {}).get("progress_pct"))
            if task is not None:
                w.seen = True
                self._update(w, task)
                finished_without_link = not w.done and task.get("status") in SUCCEEDED
                w.absent = w.absent + 1 if finished_without_link else 0
                if finished_without_link and w.absent > ABSENT_GRACE:
                    yield from self._look_elsewhere(w)
            else:
                w.absent += 1
                if w.seen or w.absent > ABSENT_GRACE:
                    yield from self._look_elsewhere(w)
            changed = changed or w.done or before != (w.status, (w.task or {}).get("progress_pct"))
        return changed

    def _update(self, w: Watch, task: dict) -> None:
        status = task.get("status")
        if status in SUCCEEDED and not links_ready(task):
            w.task = {**(w.task or {}), **task}  # finished but no link listed yet: look again later
            w.seen = True
            return
        w.task = task
        if status in TERMINAL:
            w.done, w.error = True, task_error(task)

    def _look_elsewhere(self, w: Watch) -> Flow:
        """The task left pending (or never showed): ask for it by id, then search the drafts."""
        try:
            task = yield from self.task(w.task_id)
        except errors.NotFoundError:
            task = None
        if task and task.get("status") in TERMINAL and (task.get("status") not in SUCCEEDED or links_ready(task)):
            self._update(w, task)
            return
        if task is None or task.get("status") in SUCCEEDED:
            drafts = yield from self.drafts_of_task(w.task_id, n_variants(task or w.task or {}))
            if drafts:
                self._update(w, task_from_draft(w.task_id, drafts, task))
                return
        if task is not None:
            w.task = task
            if task.get("status") in SUCCEEDED and w.absent > ABSENT_GRACE + 3:
                w.done = True  # finished, but its video is gone (its draft was deleted)
                w.error = errors.TaskFailedError(f"task {w.task_id} finished but has no video any more "
                                                 "(was its draft deleted?)", task_id=w.task_id, task=task,
                                                 reason="no video")
        elif time.time() - w.started > MISSING_AFTER and w.absent > ABSENT_GRACE:
            w.done = True
            w.error = errors.NotFoundError(f"task {w.task_id} is in neither pending, tasks nor drafts",
                                           status=404, code="not_found")

    def drafts_of_task(self, task_id: str, want: int = 1) -> Flow:
        """The drafts of one task (a task of variations has several), searched newest first.

        Stops at the end of the page where they were found, once ``want`` are in hand (the
        drafts of one task were made together, so they lie together in the list).
        """
        found: list[dict] = []
        cursor, pages = None, 0
        while pages < DRAFT_PAGES:
            page = yield from self.drafts_page(DRAFT_PAGE, cursor)
            pages += 1
            found += [d for d in page.get("items") or [] if isinstance(d, dict) and d.get("task_id") == task_id]
            cursor = page.get("cursor")
            if not cursor or len(found) >= want or (found and pages > 1):
                break
        # oldest first: the order the server made (and listed) them in the task
        return sorted(found, key=lambda d: epoch_seconds(d.get("created_at")))

    def next_interval(self, current: float | None, changed: bool) -> float:
        """2 to 3 s with jitter, like the web page; slower (up to ``poll_max``) while nothing moves."""
        fresh = random.uniform(*self.poll_interval)
        if changed or current is None:
            return fresh
        return min(self.poll_max, max(current, fresh) * 1.5)

    def wait(self, watches: list[Watch], on_update: Callable[[Watch], None] | None = None,
             timeout: float | None = None) -> Flow:
        """Poll until every watch is done (or ``timeout``); each cycle serves all of them."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = None
        while True:
            changed = yield from self.poll_cycle(watches)
            if on_update:
                for w in watches:
                    on_update(w)
            if all(w.done for w in watches):
                return watches
            interval = self.next_interval(interval, changed)
            if deadline is not None and time.monotonic() + interval > deadline:
                raise errors.WaitTimeoutError(f"gave up waiting after {timeout:.0f} s")
            yield Sleep(interval)


def epoch_seconds(value: Any) -> float:
    """A timestamp as epoch seconds: sorakit sends floats, other servers may send ISO 8601."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return 0.0


def draft_link(draft: dict) -> str | None:
    return (draft.get("url") or draft.get("video_url") or draft.get("download_url")
            or draft.get("downloadable_url")) if isinstance(draft, dict) else None


def _video_url(task: dict) -> str | None:
    gens = task.get("generations") or []
    return draft_link(gens[0]) if gens else None


def video_drafts(task: dict) -> list[dict]:
    """The drafts of a task that hold a video, in the task's order (refusals and errors left out)."""
    return [g for g in task.get("generations") or [] if isinstance(g, dict) and g.get("kind") in VIDEO_KINDS]


def links_ready(task: dict) -> bool:
    """Every video of a finished task has its link (a task of variations has several)."""
    videos = video_drafts(task)
    return bool(videos) and all(draft_link(g) for g in videos)


def n_variants(task: dict) -> int:
    """How many videos a task makes (``n_variants``; 1 when the server does not say)."""
    value = task.get("n_variants") or task.get("nsamples") or 1
    return value if isinstance(value, int) and value > 0 else 1


def task_from_draft(task_id: str, drafts: dict | list[dict], task: dict | None) -> dict:
    """A finished task reconstructed from its drafts (for servers where tasks vanish)."""
    drafts = [drafts] if isinstance(drafts, dict) else list(drafts)
    status = "succeeded" if any(d.get("kind") in VIDEO_KINDS for d in drafts) else "failed"
    first = drafts[0]
    return {**(task or {}), "id": task_id, "status": status, "generations": drafts,
            "failure_reason": (task or {}).get("failure_reason") or first.get("reason_str"),
            "prompt": (task or {}).get("prompt") or first.get("prompt")}


def storyboard_shots(shots: Iterable[Any]) -> list[dict[str, Any]]:
    """Shots as ``[{"prompt", "duration_s"}]``, from ``(prompt, seconds)`` pairs or dicts
    (``prompt`` with ``seconds``, ``duration_s`` or ``duration``). Raises ValueError naming the shot."""
    if isinstance(shots, (str, bytes, dict)):
        raise ValueError("shots must be a list of (prompt, seconds) pairs or dicts")
    parsed = []
    for n, shot in enumerate(shots, 1):
        if isinstance(shot, dict):
            prompt = shot.get("prompt")
            seconds = next((shot[k] for k in ("seconds", "duration_s", "duration") if shot.get(k) is not None), None)
        elif isinstance(shot, (tuple, list)) and len(shot) == 2:
            prompt, seconds = shot
        else:
            raise ValueError(f"shot {n}: expected (prompt, seconds) or a dict with prompt and seconds, got {shot!r}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"shot {n}: the prompt is missing or empty")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"shot {n}: seconds must be a number more than 0, got {seconds!r}")
        parsed.append({"prompt": prompt.strip(), "duration_s": float(seconds)})
    if not parsed:
        raise ValueError("a storyboard needs at least one shot")
    return parsed


def _seconds_text(seconds: float) -> str:
    """``5.0`` as the web app wrote it, but never rounded: ``2.25`` stays ``2.25``."""
    text = f"{seconds:.1f}"
    return text if float(text) == seconds else repr(float(seconds))


def timeline_text(shots: list[dict[str, Any]], instructions: str | None = None) -> str:
    """The web app's text form of a storyboard (PROTOCOL section 2)."""
    parts = [f"Shot {n}:\nduration: {_seconds_text(s['duration_s'])}sec\nScene: {s['prompt']}"
             for n, s in enumerate(shots, 1)]
    text = "current timeline:\n" + "\n\n".join(parts)
    if instructions:
        text += f"\n\ninstructions:\n{instructions}"
    return text


def task_error(task: dict) -> errors.TaskError | None:
    status, task_id = task.get("status"), task.get("id", "?")
    if status in SUCCEEDED:
        return None
    if status in ("cancelled", "canceled"):
        return errors.TaskCancelledError(f"task {task_id} was cancelled", task_id=task_id, task=task)
    gens = [g for g in task.get("generations") or [] if isinstance(g, dict)] or [{}]
    reason = task.get("failure_reason") or gens[0].get("reason_str") or "no reason given"
    if gens[0].get("kind") == "sora_content_violation":
        exc = errors.ContentViolationError(f"task {task_id} was refused: {reason}", task_id=task_id,
                                           task=task, reason=reason)
        exc.markdown_reason = gens[0].get("markdown_reason_str")
        return exc
    return errors.TaskFailedError(f"task {task_id} failed: {reason}", task_id=task_id, task=task, reason=reason)
