"""Downloads that survive: stream to ``<name>.part``, resume with ``Range``, start over on a 200,
refresh a refused or expired link from the task or draft, check the size, rename into place.
Broken connections, 429 and 5xx are retried through an outage of up to ``retry.max_outage``
seconds, whose clock starts again whenever bytes arrive.

Written as a flow of steps (see ``steps.py``) so both clients share it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import errors
from .core import Core, Flow, _video_url
from .outage import Outage
from .steps import Fetch, Fetched, Sleep

REFUSED = (401, 403, 404, 410)
MAX_REFRESHES = 3


@dataclass
class Source:
    """Where a video comes from, and how to get a fresh link to it."""

    url: str | None
    task_id: str | None = None
    gen_id: str | None = None

    @property
    def key(self) -> str:
        """What a partial file must have been started from to be resumed."""
        return self.gen_id or self.task_id or (self.url or "").split("?")[0]

    def refresh(self, core: Core) -> Flow:
        draft = yield from find_draft(core, self.task_id, self.gen_id)
        url = draft_url(draft) if draft else None
        if not url:
            raise errors.DownloadError(f"no downloadable video for {self.gen_id or self.task_id}")
        self.url = url
        return url


def draft_url(draft: dict) -> str | None:
    return _video_url({"generations": [draft]})


def find_draft(core: Core, task_id: str | None, gen_id: str | None) -> Flow:
    """The draft by its id, else the task's first generation, else a search of the drafts."""
    if gen_id:
        try:
            return (yield from core.draft(gen_id))
        except errors.NotFoundError:
            pass
    if task_id:
        try:
            task = yield from core.task(task_id)
            for gen in task.get("generations") or []:
                if not gen_id or gen.get("id") == gen_id:
                    return gen
        except errors.NotFoundError:
            pass
    return (yield from core.iter_drafts(
        lambda d: d.get("id") == gen_id if gen_id else d.get("task_id") == task_id, max_pages=20))


def _expected_size(result: Fetched, offset: int) -> int | None:
    found = re.match(r"bytes (\d+)-(\d+)/(\d+)", result.headers.get("content-range", ""))
    if found:
        return int(found.group(3))
    length = result.headers.get("content-length")
    if length and length.isdigit():
        return int(length) + (offset if result.status == 206 else 0)
    return None


def _unsatisfiable_total(result: Fetched) -> int | None:
    found = re.match(r"bytes \*/(\d+)", result.headers.get("content-range", ""))
    return int(found.group(1)) if found else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PartFile:
    """``<name>.part`` and, beside it, ``<name>.part.json``: which video it holds, and its ETag.

    A part file left by another video (a reused name) is never resumed into this one.
    """

    def __init__(self, dest: Path, key: str) -> None:
        self.path = dest.with_name(dest.name + ".part")
        self.meta = dest.with_name(dest.name + ".part.json")
        self.key = key
        self.etag = self._adopt()

    def _adopt(self) -> str | None:
        try:
            meta = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("source") == self.key:
            return meta.get("etag")
        self.path.unlink(missing_ok=True)  # no record, or another video's: start afresh
        return None

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def record(self, result: Fetched) -> None:
        etag = result.headers.get("etag")
        if result.status in (200, 206) and etag != self.etag:
            self.etag = etag
            self.meta.write_text(json.dumps({"source": self.key, "etag": etag}))

    def finish(self, dest: Path) -> None:
        os.replace(self.path, dest)
        self.meta.unlink(missing_ok=True)


def download(core: Core, source: Source, dest: Path,
             on_bytes: Callable[[int], None] | None = None) -> Flow:
    """Fetch ``source`` into ``dest``; returns the file's SHA-256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not source.url:
        yield from source.refresh(core)
    part = PartFile(dest, source.key)
    part.meta.write_text(json.dumps({"source": part.key, "etag": part.etag}))
    outage: Outage | None = None
    refreshes = 0
    while True:
        offset = part.size()
        result: Fetched = yield Fetch(source.url, part.path, offset, on_bytes, part.etag)
        part.record(result)
        if result.size > offset:
            core.answered()
            outage = None  # the outage clock starts again whenever bytes arrive
        if result.status in (200, 206) and result.error is None:
            expected = _expected_size(result, offset)
            if expected is None or result.size == expected:
                break
            result = Fetched(result.status, result.headers, result.size,
                             errors.IncompleteBodyError(f"got {result.size} of {expected} bytes"))
        if result.status == 416:
            total = _unsatisfiable_total(result)
            if total is not None and part.size() == total:
                break
            part.path.unlink(missing_ok=True)
            continue
        if result.status in REFUSED:
            refreshes += 1
            if refreshes > MAX_REFRESHES:
                raise errors.DownloadError(f"the download link was refused (HTTP {result.status}) "
                                           f"{refreshes - 1} times after fresh links")
            yield from source.refresh(core)
            continue
        if not _retryable(result):
            raise errors.DownloadError(f"download failed: HTTP {result.status}")
        outage = outage or core.outage()
        yield Sleep(outage.pause(_failure(result)))
    part.finish(dest)
    return sha256_file(dest)


def _retryable(result: Fetched) -> bool:
    return result.error is not None or result.status == 429 or result.status >= 500


def _failure(result: Fetched) -> errors.SoraError:
    """A retryable attempt as the error raised if the outage outlasts ``max_outage``."""
    if result.error is not None:
        return result.error
    # the body of a CDN's or proxy's error page says nothing useful: name the status (and Retry-After)
    return errors.from_response(result.status, None, result.headers)
