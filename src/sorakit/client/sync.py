"""``SoraClient``: the blocking client. It only carries out the steps that ``core.py`` yields."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from . import errors, files
from .core import Core, Credentials, Flow, Watch
from .download import Source, download, draft_url
from .outage import OutageEvent
from .steps import Fetch, Fetched, Reply, RetryPolicy, Send, Sleep

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
class GenerateResult:
    task: dict
    draft: dict
    path: Path
    sidecar: Path
    sha256: str


def sidecar_data(client_base: str, task: dict, draft: dict, body: dict, path: Path, sha: str,
                 started: float) -> dict[str, Any]:
    return {"prompt": task.get("prompt") or body.get("prompt"), "parameters": body,
            "task_id": task.get("id"), "generation_id": draft.get("id"), "server": client_base,
            "width": draft.get("width"), "height": draft.get("height"), "n_frames": task.get("n_frames"),
            "created_at": task.get("created_at"), "requested_at": started, "downloaded_at": time.time(),
            "file": path.name, "sha256": sha, "engine": draft.get("engine")}


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
        self._http = http_client or httpx2.Client(transport=transport, timeout=TIMEOUT)
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
    def create(self, prompt: str, *, idempotency_key: str | None = None, **fields: Any) -> dict:
        """``POST /backend/nf/create`` with every web field (keywords) plus any extras."""
        return self._run(self.core.create(Core.create_body(prompt, **fields), idempotency_key))

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

    def generate(self, prompt: str, *, output: str = files.DEFAULT_TEMPLATE, index: int = 0,
                 on_progress: Callable[[dict], None] | None = None, timeout: float | None = None,
                 on_bytes: Callable[[int], None] | None = None, **fields: Any) -> GenerateResult:
        """create + wait + download + sidecar."""
        files.check_template(output)  # a typo must not cost a generation
        started = time.time()
        body = Core.create_body(prompt, **fields)
        task = self.wait(self._run(self.core.create(body))["id"], on_progress=on_progress, timeout=timeout)
        draft = task["generations"][0]
        path = files.render(output, task_id=task["id"], gen_id=draft.get("id"), prompt=prompt, index=index)
        sha = self.download(draft_with_task(draft, task), path, on_bytes=on_bytes)
        sidecar = files.write_sidecar(path, sidecar_data(self.base_url, task, draft, body, path, sha, started))
        return GenerateResult(task, draft, path, sidecar, sha)


def draft_with_task(draft: dict, task: dict) -> dict:
    return {**draft, "task_id": draft.get("task_id") or task.get("id")}


def source_for(video: dict | str) -> Source:
    if isinstance(video, dict):
        return Source(draft_url(video), video.get("task_id"), video.get("id") or video.get("generation_id"))
    if video.startswith("gen_"):
        return Source(None, None, video)
    return Source(None, video, None)
