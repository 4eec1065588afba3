"""``SoraClient``: the blocking client. It only carries out the steps that ``core.py`` yields."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from . import errors, files
from .core import STORYBOARD_PATH, Core, Credentials, Flow, Watch, video_drafts
from .download import Source, download, draft_url
from .outage import OutageEvent
from .steps import Fetch, Fetched, Reply, RetryPolicy, Send, Sleep
from .transport import Client

# Bodies are read as the bytes arrive (no fixed chunk size): whatever reached us before a
# connection broke is on disk and counts for the resume.
TIMEOUT = httpx2.Timeout(30.0, connect=10.0)


def map_transport(exc: Exception) -> errors.TransportError:
    """httpx2's exceptions as ours (messages redacted by the base class)."""
    if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
        return errors.ConnectError(f"could not connect: {exc}")
    if isinstance(exc, httpx2.TimeoutException):
        return errors.ReadTimeoutError(f"the server stopped answering: {exc}")
    if isinstance(exc, httpx2.RemoteProtocolError):
        return errors.IncompleteBodyError(f"the connection broke mid-answer: {exc}")
    return errors.TransportError(f"{type(exc).__name__}: {exc}")


def parse_body(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def content_range_start(headers) -> int | None:
    value = headers.get("content-range", "")
    if value.startswith("bytes ") and "-" in value:
        head = value[6:].split("-", 1)[0]
        return int(head) if head.isdigit() else None
    return None


def fetch_mode(step: Fetch, status: int, headers) -> str | None:
    """How to open the part file for an answer: append, start over, or not at all."""
    if status == 200:
        return "wb"
    if status == 206:
        start = content_range_start(headers)
        return "ab" if start == step.offset else ("wb" if start == 0 else None)
    return None


@dataclass
class Video:
    """One downloaded video of a task: its draft, file, sidecar and SHA-256."""

    draft: dict
    path: Path
    sidecar: Path
    sha256: str


@dataclass
class GenerateResult:
    """A finished task and its downloaded video(s). ``draft``, ``path``, ``sidecar`` and
    ``sha256`` are the first video's; ``videos`` holds every one (N for N variants)."""

    task: dict
    draft: dict
    path: Path
    sidecar: Path
    sha256: str
    videos: list[Video] = field(default_factory=list)

    @classmethod
    def of(cls, task: dict, videos: list[Video]) -> GenerateResult:
        first = videos[0]
        return cls(task, first.draft, first.path, first.sidecar, first.sha256, videos)

    @property
    def paths(self) -> list[Path]:
        return [v.path for v in self.videos] or [self.path]


def sidecar_data(client_base: str, task: dict, draft: dict, body: dict, path: Path, sha: str,
                 started: float, *, variant: int | None = None, variants: int | None = None) -> dict[str, Any]:
    data = {"prompt": task.get("prompt") or body.get("prompt"), "parameters": body,
            "task_id": task.get("id"), "generation_id": draft.get("id"), "server": client_base,
            "width": draft.get("width"), "height": draft.get("height"),
            "n_frames": draft.get("n_frames") or task.get("n_frames"),
            "created_at": task.get("created_at"), "requested_at": started, "downloaded_at": time.time(),
            "file": path.name, "sha256": sha, "engine": draft.get("engine")}
    if task.get("operation") and task.get("operation") != "generate":
        data["operation"] = task["operation"]
    if variants and variants > 1:
        data.update(variant=variant, n_variants=variants)
    return data


def variant_path(path: Path, number: int, count: int) -> Path:
    """``name.mp4`` for a task's only video; ``name-1.mp4`` ... ``name-N.mp4`` for N of them."""
    return path if count <= 1 else path.with_name(f"{path.stem}-{number}{path.suffix}")


def finished_videos(task: dict) -> list[dict]:
    """The drafts of a finished task to download (every video, not only the first)."""
    videos = video_drafts(task)
    if not videos:
        raise errors.DownloadError(f"task {task.get('id')} has no video to download")
    return videos


def plan_downloads(task: dict, output: str, prompt: str | None, index: int) -> list[tuple[dict, Path]]:
    """Each video draft of ``task`` with the file it goes to (the template rendered per draft)."""
    videos = finished_videos(task)
    prompt = prompt if prompt is not None else task.get("prompt") or ""
    return [(draft_with_task(d, task),
             variant_path(files.render(output, task_id=task["id"], gen_id=d.get("id"), prompt=prompt,
                                       index=index), n, len(videos)))
            for n, d in enumerate(videos, 1)]


class SoraClient:
    """Create, follow and download videos from a server of PROTOCOL.md.

    ``transport`` (an httpx2 transport) or ``http_client`` can be injected: tests drive the real
    server app in-process through them. ``retry`` bounds how long an outage is waited out
    (``RetryPolicy.max_outage``, 5 minutes by default); ``on_outage`` is told of each failed
    attempt meanwhile, and of the server's return (an ``OutageEvent``, whose ``message`` is
    ready to print).
    """

    def __init__(self, base_url: str, token: str | None = None, *, cookie: str | None = None,
                 device_id: str | None = None, sentinel_token: str | None = None,
                 user_agent: str | None = None, transport: httpx2.BaseTransport | None = None,
                 http_client: httpx2.Client | None = None, retry: RetryPolicy | None = None,
                 poll_interval: tuple[float, float] = (2.0, 3.0), poll_max: float = 10.0,
                 on_outage: Callable[[OutageEvent], None] | None = None) -> None:
        creds = Credentials(token, cookie, device_id, sentinel_token, user_agent)
        self.core = Core(base_url, creds, retry or RetryPolicy(), poll_interval, poll_max, on_outage)
        self.base_url = self.core.base_url
        self._http = http_client or Client(transport=transport, timeout=TIMEOUT)  # no SSL for http://
        self._owns_http = http_client is None
        self.requests_sent = 0

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> SoraClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the driver -----------------------------------------------------------------------
    def _run(self, flow: Flow) -> Any:
        value, error = None, None
        while True:
            try:
                step = flow.throw(error) if error else flow.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = self._do(step)
            except errors.TransportError as exc:
                error = exc

    def _do(self, step: Any) -> Any:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        if isinstance(step, Send):
            return self._send(step)
        if isinstance(step, Fetch):
            return self._fetch(step)
        raise TypeError(f"unknown step {step!r}")

    def _send(self, step: Send) -> Reply:
        self.requests_sent += 1
        try:
            r = self._http.request(step.method, step.url, params=step.params, json=step.json,
                                   headers=dict(step.headers), follow_redirects=False)
        except httpx2.TransportError as exc:
            raise map_transport(exc) from None
        return Reply(r.status_code, r.headers, parse_body(r))

    def _fetch(self, step: Fetch) -> Fetched:
        self.requests_sent += 1
        headers = step.headers()
        status, got, size = 0, {}, step.offset
        try:
            with self._http.stream("GET", step.url, headers=headers, follow_redirects=True) as r:
                status, got = r.status_code, r.headers
                mode = fetch_mode(step, status, got)
                if mode is None:
                    return Fetched(status, got, size, body=r.read()[:4096])
                size = 0 if mode == "wb" else step.offset
                with open(step.part, mode) as f:
                    for chunk in r.iter_bytes():
                        f.write(chunk)
                        size += len(chunk)
                        if step.on_bytes:
                            step.on_bytes(size)
        except httpx2.TransportError as exc:
            return Fetched(status, got, size, map_transport(exc))
        return Fetched(status, got, size)

    # -- the API ----------------------------------------------------------------------------
    def create(self, prompt: str, *, idempotency_key: str | None = None, variants: int | None = None,
               **fields: Any) -> dict:
        """``POST /backend/nf/create`` with every web field (keywords) plus any extras.

        ``variants=N`` (N > 1): one task making N videos of the prompt (``nsamples``, sent to
        ``bulk_create`` as the web page did); ``download_task`` fetches them all.
        """
        return self._run(self.core.create(Core.create_body(prompt, variants=variants, **fields), idempotency_key))

    def remix(self, gen_or_post_id: str, prompt: str, *, strength: float | None = None,
              idempotency_key: str | None = None, **create_fields: Any) -> dict:
        """A new video from a draft (``gen_...``) or post (``s_...``) and a new prompt.

        ``strength`` 0..1 (a sorakit extension): how far it may move from the source. Returns
        what ``create`` returns: follow it with ``wait`` and fetch it with ``download_task``.
        """
        body = Core.remix_body(gen_or_post_id, prompt, strength=strength, **create_fields)
        return self._run(self.core.create(body, idempotency_key))

    def extend(self, gen_id: str, seconds: float, prompt: str = "", *,
               idempotency_key: str | None = None) -> dict:
        """``seconds`` more of draft ``gen_id`` (``prompt``: what happens next; empty: more of the
        same). The task's one draft is the source and its extension as one longer video."""
        return self._run(self.core.extend(gen_id, seconds, prompt, idempotency_key))

    def storyboard(self, shots: list, *, instructions: str | None = None, idempotency_key: str | None = None,
                   **create_fields: Any) -> dict:
        """One video made of shots in order: ``shots`` are ``(prompt, seconds)`` pairs or dicts
        (``{"prompt", "seconds"}``). Raises ValueError for a bad shot before anything is sent."""
        body = Core.storyboard_body(shots, instructions=instructions, **create_fields)
        return self._run(self.core.create(body, idempotency_key, path=STORYBOARD_PATH))

    def share(self, gen_id: str, text: str = "") -> dict:
        """Publish a draft; returns the post (``id`` ``s_...``, ``permalink``: a public URL)."""
        return self._run(self.core.share(gen_id, text))

    def post(self, post_id: str) -> dict:
        return self._run(self.core.post(post_id))

    def unshare(self, post_id: str) -> dict:
        """Delete a post: its permalink stops working (the draft stays)."""
        return self._run(self.core.unshare(post_id))

    def pending(self) -> list[dict]:
        return self._run(self.core.pending())

    def task(self, task_id: str) -> dict:
        return self._run(self.core.task(task_id))

    def drafts(self, limit: int = 15):
        """Every draft, newest first, fetching page after page as you iterate."""
        cursor = None
        while True:
            page = self._run(self.core.drafts_page(limit, cursor))
            yield from page.get("items") or []
            cursor = page.get("cursor")
            if not cursor:
                return

    def draft(self, gen_id: str) -> dict:
        return self._run(self.core.draft(gen_id))

    def usage(self) -> dict:
        return self._run(self.core.usage())

    def cancel(self, task_id: str) -> dict:
        return self._run(self.core.cancel(task_id))

    def poll(self, watches: list[Watch]) -> bool:
        """One shared poll for every watch (batch drivers call this in their own loop)."""
        return self._run(self.core.poll_cycle(watches))

    def wait(self, task_id: str, *, on_progress: Callable[[dict], None] | None = None,
             timeout: float | None = None) -> dict:
        """Until the task finishes; returns it, or raises its TaskError."""
        watch = self.wait_many([task_id], on_progress=on_progress, timeout=timeout)[0]
        if watch.error:
            raise watch.error
        return watch.task

    def wait_many(self, task_ids: list[str], *, on_progress: Callable[[dict], None] | None = None,
                  timeout: float | None = None) -> list[Watch]:
        """Follow many tasks with one ``pending/v2`` request per cycle; errors stay on the watches."""
        watches = [Watch(t) for t in task_ids]
        notify = (lambda w: w.task and on_progress(w.task)) if on_progress else None
        return self._run(self.core.wait(watches, notify, timeout))

    def download(self, video: dict | str, dest: str | Path, *,
                 on_bytes: Callable[[int], None] | None = None) -> str:
        """Download a draft (dict), or the video of a task or draft id; returns its SHA-256."""
        return self._run(download(self.core, source_for(video), Path(dest), on_bytes))

    def download_task(self, task: dict | str, output: str = files.DEFAULT_TEMPLATE, *, index: int = 0,
                      body: dict | None = None, started: float | None = None,
                      on_bytes: Callable[[int], None] | None = None) -> GenerateResult:
        """Download every video of a finished task (a dict, or its id: then waited for) with
        sidecars. One video goes to the rendered ``output``; N of them (variants) to
        ``<name>-1.mp4`` ... ``<name>-N.mp4``."""
        files.check_template(output)
        task = self.wait(task) if isinstance(task, str) else task
        started = time.time() if started is None else started
        plan = plan_downloads(task, output, (body or {}).get("prompt"), index)
        videos = []
        for n, (draft, path) in enumerate(plan, 1):
            sha = self.download(draft, path, on_bytes=on_bytes)
            data = sidecar_data(self.base_url, task, draft, body or {"prompt": task.get("prompt")}, path, sha,
                                started, variant=n, variants=len(plan))
            videos.append(Video(draft, path, files.write_sidecar(path, data), sha))
        return GenerateResult.of(task, videos)

    def generate(self, prompt: str, *, output: str = files.DEFAULT_TEMPLATE, index: int = 0,
                 on_progress: Callable[[dict], None] | None = None, timeout: float | None = None,
                 on_bytes: Callable[[int], None] | None = None, variants: int | None = None,
                 **fields: Any) -> GenerateResult:
        """create + wait + download + sidecar (``variants=N``: N videos, see ``download_task``)."""
        files.check_template(output)  # a typo must not cost a generation
        started = time.time()
        body = Core.create_body(prompt, variants=variants, **fields)
        task = self.wait(self._run(self.core.create(body))["id"], on_progress=on_progress, timeout=timeout)
        return self.download_task(task, output, index=index, body=body, started=started, on_bytes=on_bytes)


def draft_with_task(draft: dict, task: dict) -> dict:
    return {**draft, "task_id": draft.get("task_id") or task.get("id")}


def source_for(video: dict | str) -> Source:
    if isinstance(video, dict):
        return Source(draft_url(video), video.get("task_id"), video.get("id") or video.get("generation_id"))
    if video.startswith("gen_"):
        return Source(None, None, video)
    return Source(None, video, None)
