"""``AsyncSoraClient``: the same logic as ``SoraClient``, driven with asyncio.

Every concurrent ``wait`` shares one poller: however many tasks are awaited, one ``pending/v2``
request per cycle serves them all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from . import errors, files
from .core import STORYBOARD_PATH, Core, Credentials, Flow, Watch
from .download import download
from .outage import OutageEvent
from .steps import Fetch, Fetched, Reply, RetryPolicy, Send, Sleep
from .transport import AsyncClient
from .sync import (TIMEOUT, GenerateResult, Video, fetch_mode, map_transport, parse_body, plan_downloads,
                   sidecar_data, source_for)


@dataclass
class _Waiters:
    watch: Watch
    done: asyncio.Event = field(default_factory=asyncio.Event)
    callbacks: list[Callable[[dict], None]] = field(default_factory=list)
    count: int = 0


class SharedPoller:
    def __init__(self, client: AsyncSoraClient) -> None:
        self.client = client
        self.entries: dict[str, _Waiters] = {}
        self._loop_task: asyncio.Task | None = None

    async def wait(self, task_id: str, on_progress: Callable[[dict], None] | None,
                   timeout: float | None) -> Watch:
        entry = self.entries.setdefault(task_id, _Waiters(Watch(task_id)))
        entry.count += 1
        if on_progress:
            entry.callbacks.append(on_progress)
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run())
        try:
            await asyncio.wait_for(entry.done.wait(), timeout)
        except TimeoutError:
            raise errors.WaitTimeoutError(f"gave up waiting for {task_id} after {timeout:.0f} s") from None
        finally:
            entry.count -= 1
            if entry.count == 0:
                self.entries.pop(task_id, None)
        return entry.watch

    async def _run(self) -> None:
        interval = None
        while self.entries:
            open_ = [e for e in self.entries.values() if not e.done.is_set()]
            try:
                changed = await self.client._run(self.client.core.poll_cycle([e.watch for e in open_]))
            except errors.SoraError as exc:  # not transient (those are retried inside): all fail
                for e in open_:
                    e.watch.done, e.watch.error = True, exc
                changed = True
            self._notify(open_)
            interval = self.client.core.next_interval(interval, changed)
            await asyncio.sleep(interval if self.client.core.retry.wait else 0.01)

    @staticmethod
    def _notify(entries: list[_Waiters]) -> None:
        for e in entries:
            if e.watch.task:
                for callback in e.callbacks:
                    callback(e.watch.task)
            if e.watch.done:
                e.done.set()


class AsyncSoraClient:
    """The asyncio twin of :class:`SoraClient`; same arguments, awaitable methods."""

    def __init__(self, base_url: str, token: str | None = None, *, cookie: str | None = None,
                 device_id: str | None = None, sentinel_token: str | None = None,
                 user_agent: str | None = None, transport: httpx2.AsyncBaseTransport | None = None,
                 http_client: httpx2.AsyncClient | None = None, retry: RetryPolicy | None = None,
                 poll_interval: tuple[float, float] = (2.0, 3.0), poll_max: float = 10.0,
                 on_outage: Callable[[OutageEvent], None] | None = None) -> None:
        creds = Credentials(token, cookie, device_id, sentinel_token, user_agent)
        self.core = Core(base_url, creds, retry or RetryPolicy(), poll_interval, poll_max, on_outage)
        self.base_url = self.core.base_url
        self._http = http_client or AsyncClient(transport=transport, timeout=TIMEOUT)  # no SSL for http://
        self._owns_http = http_client is None
        self.poller = SharedPoller(self)
        self.requests_sent = 0

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncSoraClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _run(self, flow: Flow) -> Any:
        value, error = None, None
        while True:
            try:
                step = flow.throw(error) if error else flow.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = await self._do(step)
            except errors.TransportError as exc:
                error = exc

    async def _do(self, step: Any) -> Any:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, Send):
            return await self._send(step)
        if isinstance(step, Fetch):
            return await self._fetch(step)
        raise TypeError(f"unknown step {step!r}")

    async def _send(self, step: Send) -> Reply:
        self.requests_sent += 1
        try:
            r = await self._http.request(step.method, step.url, params=step.params, json=step.json,
                                         headers=dict(step.headers), follow_redirects=False)
        except httpx2.TransportError as exc:
            raise map_transport(exc) from None
        return Reply(r.status_code, r.headers, parse_body(r))

    async def _fetch(self, step: Fetch) -> Fetched:
        self.requests_sent += 1
        headers = step.headers()
        status, got, size = 0, {}, step.offset
        try:
            async with self._http.stream("GET", step.url, headers=headers, follow_redirects=True) as r:
                status, got = r.status_code, r.headers
                mode = fetch_mode(step, status, got)
                if mode is None:
                    return Fetched(status, got, size, body=(await r.aread())[:4096])
                size = 0 if mode == "wb" else step.offset
                with open(step.part, mode) as f:
                    async for chunk in r.aiter_bytes():
                        f.write(chunk)
                        size += len(chunk)
                        if step.on_bytes:
                            step.on_bytes(size)
        except httpx2.TransportError as exc:
            return Fetched(status, got, size, map_transport(exc))
        return Fetched(status, got, size)

    # -- the API ----------------------------------------------------------------------------
    async def create(self, prompt: str, *, idempotency_key: str | None = None, variants: int | None = None,
                     **fields: Any) -> dict:
        return await self._run(self.core.create(Core.create_body(prompt, variants=variants, **fields),
                                                idempotency_key))

    async def remix(self, gen_or_post_id: str, prompt: str, *, strength: float | None = None,
                    idempotency_key: str | None = None, **create_fields: Any) -> dict:
        body = Core.remix_body(gen_or_post_id, prompt, strength=strength, **create_fields)
        return await self._run(self.core.create(body, idempotency_key))

    async def extend(self, gen_id: str, seconds: float, prompt: str = "", *,
                     idempotency_key: str | None = None) -> dict:
        return await self._run(self.core.extend(gen_id, seconds, prompt, idempotency_key))

    async def storyboard(self, shots: list, *, instructions: str | None = None,
                         idempotency_key: str | None = None, **create_fields: Any) -> dict:
        body = Core.storyboard_body(shots, instructions=instructions, **create_fields)
        return await self._run(self.core.create(body, idempotency_key, path=STORYBOARD_PATH))

    async def share(self, gen_id: str, text: str = "") -> dict:
        return await self._run(self.core.share(gen_id, text))

    async def post(self, post_id: str) -> dict:
        return await self._run(self.core.post(post_id))

    async def unshare(self, post_id: str) -> dict:
        return await self._run(self.core.unshare(post_id))

    async def pending(self) -> list[dict]:
        return await self._run(self.core.pending())

    async def task(self, task_id: str) -> dict:
        return await self._run(self.core.task(task_id))

    async def drafts(self, limit: int = 15):
        cursor = None
        while True:
            page = await self._run(self.core.drafts_page(limit, cursor))
            for item in page.get("items") or []:
                yield item
            cursor = page.get("cursor")
            if not cursor:
                return

    async def draft(self, gen_id: str) -> dict:
        return await self._run(self.core.draft(gen_id))

    async def usage(self) -> dict:
        return await self._run(self.core.usage())

    async def cancel(self, task_id: str) -> dict:
        return await self._run(self.core.cancel(task_id))

    async def wait(self, task_id: str, *, on_progress: Callable[[dict], None] | None = None,
                   timeout: float | None = None) -> dict:
        watch = await self.poller.wait(task_id, on_progress, timeout)
        if watch.error:
            raise watch.error
        return watch.task

    async def download(self, video: dict | str, dest: str | Path, *,
                       on_bytes: Callable[[int], None] | None = None) -> str:
        return await self._run(download(self.core, source_for(video), Path(dest), on_bytes))

    async def download_task(self, task: dict | str, output: str = files.DEFAULT_TEMPLATE, *, index: int = 0,
                            body: dict | None = None, started: float | None = None,
                            on_bytes: Callable[[int], None] | None = None) -> GenerateResult:
        files.check_template(output)
        task = (await self.wait(task)) if isinstance(task, str) else task
        started = time.time() if started is None else started
        plan = plan_downloads(task, output, (body or {}).get("prompt"), index)
        videos = []
        for n, (draft, path) in enumerate(plan, 1):
            sha = await self.download(draft, path, on_bytes=on_bytes)
            data = sidecar_data(self.base_url, task, draft, body or {"prompt": task.get("prompt")}, path, sha,
                                started, variant=n, variants=len(plan))
            videos.append(Video(draft, path, files.write_sidecar(path, data), sha))
        return GenerateResult.of(task, videos)

    async def generate(self, prompt: str, *, output: str = files.DEFAULT_TEMPLATE, index: int = 0,
                       on_progress: Callable[[dict], None] | None = None, timeout: float | None = None,
                       on_bytes: Callable[[int], None] | None = None, variants: int | None = None,
                       **fields: Any) -> GenerateResult:
        files.check_template(output)  # a typo must not cost a generation
        started = time.time()
        body = Core.create_body(prompt, variants=variants, **fields)
        created = await self._run(self.core.create(body))
        task = await self.wait(created["id"], on_progress=on_progress, timeout=timeout)
        return await self.download_task(task, output, index=index, body=body, started=started, on_bytes=on_bytes)
