"""Where finished videos, thumbnails, sprite sheets and uploads are kept: one small interface.

Every file has a *key*, a relative name with ``/`` between its parts: a draft's files are
``gen_<id>/video.mp4``, ``gen_<id>/thumbnail.webp`` and ``gen_<id>/spritesheet.jpg`` (the keys the
generations table stores), an upload's file is ``uploads/<file>`` (:func:`upload_key`). Two kinds:

- :class:`LocalStorage`: a folder on this machine or a shared mount. ``media`` unset keeps the
  layout of every earlier version: drafts under ``<data_dir>/media``, uploads under
  ``<data_dir>/uploads``; ``media = "/some/dir"`` puts both there (uploads in ``<dir>/uploads``).
  Links go through ``/assets`` (signed by the server), so :meth:`MediaStorage.url` is None.
- :class:`S3Storage`: ``media = "s3://bucket/prefix"``, any S3-compatible store. Keys live under
  the prefix; workers upload what they made and download what they build on, so no machine needs
  another's disk; links are the bucket's own presigned GET URLs, so video bytes never pass through
  an API node.

Files stay private: local ones are 0600 in 0700 folders, objects get no ACL (a bucket's objects are
private unless its owner made them otherwise).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ..private import private_dir, private_files

log = logging.getLogger("sorakit.media")
UPLOADS = "uploads"
#: SigV4 presigned URLs live at most 7 days (AWS refuses longer ones)
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: objects are served privately, like ``/assets`` serves them
CACHE_CONTROL = "private, max-age=3600"
CONTENT_TYPES = {".mp4": "video/mp4", ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                 ".png": "image/png"}


class StorageError(RuntimeError):
    """The storage could not do what was asked; the message is fit for a user (no paths, no
    credentials), ``reason`` is its cause alone ("the bucket answered NoSuchBucket (...)")."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class MediaMissing(StorageError):
    """The file (object) does not exist."""


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    mtime: float  # seconds since the epoch


def upload_key(file: str) -> str:
    """The key of an upload's file (the ``file`` column of the uploads table)."""
    return f"{UPLOADS}/{file}"


def guess_type(key: str) -> str:
    """The Content-Type a file is served with, from its name."""
    return CONTENT_TYPES.get(PurePosixPath(key).suffix.lower(), "application/octet-stream")


def _parts(key: str) -> list[str]:
    """The key's parts, refused unless it is a plain relative name (nothing can climb out)."""
    parts = key.strip("/").split("/")
    if not key or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise StorageError(f"not a media key: {key!r}")
    return parts


class MediaStorage(ABC):
    #: "local" or "s3"
    kind: str = "local"
    #: the origin (scheme://host[:port]) of the links :meth:`url` makes, for a page's
    #: Content-Security-Policy; None when links go through this server
    origin: str | None = None

    @abstractmethod
    def put(self, key: str, path: Path, content_type: str | None = None) -> None:
        """Keep the finished file at ``path`` as ``key``; ``path`` is gone afterwards (moved or
        uploaded, then deleted). A key that exists is replaced."""

    @abstractmethod
    def fetch(self, key: str, dest_dir: Path) -> Path:
        """A local file with the key's bytes, to read: the file itself when it is on this machine,
        else a download into ``dest_dir`` (the caller deletes it). :class:`MediaMissing` if none."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one file; a missing one is not an error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every file under the folder ``prefix`` (``gen_x``); returns how many."""

    @abstractmethod
    def url(self, key: str, ttl: float, *, content_type: str | None = None,
            filename: str | None = None) -> str | None:
        """A link anyone may GET for ``ttl`` seconds (capped at 7 days), or None: the server serves
        the file itself (signed ``/assets`` links). ``filename`` asks for a download under that
        name."""

    @abstractmethod
    def local_path(self, key: str) -> Path | None:
        """Where the key's file is on this machine (it may not exist), or None for remote storage."""

    @abstractmethod
    def entries(self, prefix: str) -> Iterator[Entry]:
        """Every file under the folder ``prefix`` (``uploads``, ``gen_x``; "" for all), any order."""

    @property
    @abstractmethod
    def upload_staging(self) -> Path:
        """A local folder where an upload is received before :meth:`put` (on the same file system
        as the uploads for local storage, so keeping it is a rename)."""

    def describe(self) -> str:
        """Where files are kept, for logs and ``serve``'s banner (never a credential)."""
        return self.kind


# -- a folder ----------------------------------------------------------------------------------
class LocalStorage(MediaStorage):
    kind = "local"

    def __init__(self, root: Path, uploads_root: Path | None = None) -> None:
        self.root = Path(root)
        self.uploads_root = Path(uploads_root) if uploads_root is not None else self.root / UPLOADS

    def _path(self, key: str) -> Path:
        parts = _parts(key)
        if parts[0] == UPLOADS:
            return self.uploads_root.joinpath(*parts[1:])
        return self.root.joinpath(*parts)

    def put(self, key: str, path: Path, content_type: str | None = None) -> None:
        dest = self._path(key)
        try:
            private_dir(dest.parent)
            private_files(path)
            try:
                os.replace(path, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # another file system (a temp folder elsewhere)
                    raise
                part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
                shutil.copyfile(path, part)
                private_files(part)
                os.replace(part, dest)
                Path(path).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"the media folder could not be written ({exc.strerror or type(exc).__name__})") \
                from exc

    def fetch(self, key: str, dest_dir: Path) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise MediaMissing(f"no such file: {key}")
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        folder = self._path(prefix)
        if not folder.is_dir():
            return 0
        count = sum(1 for p in folder.rglob("*") if p.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        return count

    def url(self, key: str, ttl: float, *, content_type: str | None = None,
            filename: str | None = None) -> str | None:
        return None

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def entries(self, prefix: str) -> Iterator[Entry]:
        base = self._path(prefix) if prefix.strip("/") else self.root
        if not base.is_dir():
            return
        start = prefix.strip("/")
        for path in base.rglob("*"):
            try:
                st = path.stat()
            except FileNotFoundError:  # deleted meanwhile
                continue
            if path.is_file():
                rel = path.relative_to(base).as_posix()
                yield Entry(f"{start}/{rel}" if start else rel, st.st_size, st.st_mtime)

    @property
    def upload_staging(self) -> Path:
        return self.uploads_root

    def describe(self) -> str:
        return f"local folder {self.root}"


# -- an S3-compatible bucket -------------------------------------------------------------------
def parse_s3(media: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    rest = media[len("s3://"):] if media.startswith("s3://") else media
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def _reason(exc: BaseException) -> str:
    """What went wrong, in words a user may see: the bucket's error code and message, never a
    credential or a local path."""
    from botocore.exceptions import (ClientError, EndpointConnectionError, NoCredentialsError,
                                     PartialCredentialsError)

    cause = exc.__cause__ or exc.__context__
    if not isinstance(exc, ClientError) and isinstance(cause, ClientError):
        exc = cause  # boto3's S3UploadFailedError wraps the bucket's answer (and names local paths)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Unknown"), error.get("Message") or ""
        return f"the bucket answered {code}" + (f" ({message})" if message else "")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return "no usable storage credentials are configured"
    if isinstance(exc, EndpointConnectionError):
        return "the storage endpoint could not be reached"
    if isinstance(exc, OSError):
        return f"a local file could not be used ({exc.strerror or type(exc).__name__})"
    return f"the storage request failed ({type(exc).__name__})"


def _failed(doing: str, exc: BaseException) -> StorageError:
    reason = _reason(exc)
    return StorageError(f"{doing}: {reason}", reason)


def _not_found(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error.get("Code") in ("404", "NoSuchKey", "NotFound") or status == 404


class S3Storage(MediaStorage):
    kind = "s3"

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, staging: Path, client=None, public_url: str | None = None) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._staging = Path(staging)
        self._session = None
        if client is None:
            self._session, client = _client(endpoint_url, region)
        self.client = client
        #: links are presigned for this endpoint when the nodes reach the bucket at an internal
        #: address clients cannot (SigV4 signs the host: the link must be made for the public one)
        self.link_client = client
        if public_url:
            self.link_client = _client(public_url, region, session=self._session)[1]
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError, Boto3Error, OSError)
        self._origin: str | None = None

    @property
    def origin(self) -> str | None:
        """Where links point: the origin of a presigned URL (made locally, no request sent)."""
        if self._origin is None:
            try:
                self._origin = _origin(self.url("x", 60))
            except StorageError:  # no credentials yet: the endpoint itself, until links can be made
                return _origin(getattr(self.link_client.meta, "endpoint_url", None))
        return self._origin

    def has_credentials(self) -> bool:
        """Did boto3 find credentials (already resolved when the client was made: no request)?"""
        return self._session is None or self._session.get_credentials() is not None

    def _key(self, key: str) -> str:
        name = "/".join(_parts(key))
        return f"{self.prefix}/{name}" if self.prefix else name

    def _folder(self, prefix: str) -> str:
        name = prefix.strip("/")
        return self._key(name) + "/" if name else (self.prefix + "/" if self.prefix else "")

    def _relative(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    def put(self, key: str, path: Path, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type or guess_type(key), "CacheControl": CACHE_CONTROL}
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs=extra)
        except self._errors as exc:
            raise _failed("the file could not be stored", exc) from exc
        Path(path).unlink(missing_ok=True)

    def fetch(self, key: str, dest_dir: Path) -> Path:
        private_dir(Path(dest_dir))
        dest = Path(dest_dir) / "_".join(_parts(key))
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            self.client.download_file(self.bucket, self._key(key), str(part))
            private_files(part)
            os.replace(part, dest)
        except self._errors as exc:
            part.unlink(missing_ok=True)
            if _not_found(exc):
                raise MediaMissing(f"no such object: {key}") from exc
            raise _failed("the file could not be read", exc) from exc
        return dest

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except self._errors as exc:
            if _not_found(exc):
                return False
            raise _failed("the storage could not be read", exc) from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as exc:
            if not _not_found(exc):
                raise _failed("the file could not be deleted", exc) from exc

    def delete_prefix(self, prefix: str) -> int:
        keys = [self._key(e.key) for e in self.entries(prefix)]
        deleted = 0
        try:
            for i in range(0, len(keys), 1000):  # DeleteObjects takes 1000 at most
                batch = keys[i:i + 1000]
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
                failed = answer.get("Errors") or []
                if failed:
                    raise StorageError(f"{len(failed)} file(s) could not be deleted: the bucket answered "
                                       f"{failed[0].get('Code', 'an error')}")
                deleted += len(batch)
        except self._errors as exc:
            raise _failed("the files could not be deleted", exc) from exc
        return deleted

    def url(self, key: str, ttl: float, *, content_type: str | None = None,
            filename: str | None = None) -> str | None:
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        if content_type:
            params["ResponseContentType"] = content_type
        if filename:
            safe = "".join(c for c in filename if c.isalnum() or c in "._- ")[:200] or "download"
            params["ResponseContentDisposition"] = f'attachment; filename="{safe}"'
        seconds = int(min(max(ttl, 1), MAX_PRESIGN_SECONDS))
        try:
            return self.link_client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)
        except self._errors as exc:  # presigning is local: only missing credentials get here
            raise _failed("a link could not be made", exc) from exc

    def local_path(self, key: str) -> Path | None:
        return None

    def entries(self, prefix: str) -> Iterator[Entry]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                           Prefix=self._folder(prefix))
            for page in pages:
                for item in page.get("Contents") or []:
                    yield Entry(self._relative(item["Key"]), int(item.get("Size") or 0),
                                item["LastModified"].timestamp() if item.get("LastModified") else time.time())
        except self._errors as exc:
            raise _failed("the storage could not be listed", exc) from exc

    @property
    def upload_staging(self) -> Path:
        return self._staging

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        endpoint = _origin(getattr(self.client.meta, "endpoint_url", None))
        return f"{where} at {endpoint}" if endpoint else where


def _origin(url: str | None) -> str | None:
    """scheme://host[:port] of a URL (never a user:password@ it may carry)."""
    parts = urlsplit(url or "")
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}" if parts.scheme and host else None


def _client(endpoint_url: str | None, region: str | None, session=None):
    """A boto3 session and its S3 client (thread-safe; one per process) from the settings, else boto3's own
    environment and files (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, profiles, roles)."""
    import boto3
    from botocore.config import Config

    custom = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options = dict(signature_version="s3v4", retries={"max_attempts": 4, "mode": "standard"},
                   connect_timeout=10, read_timeout=60,
                   # S3-compatible stores (MinIO, R2, Ceph...) are reached by path: no DNS per bucket
                   s3={"addressing_style": "path" if custom else "auto"})
    try:  # botocore 1.36+ adds checksums that some S3-compatible stores refuse: only when required
        config = Config(**options, request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
    except TypeError:
        config = Config(**options)
    session = session or boto3.session.Session()
    return session, session.client("s3", endpoint_url=endpoint_url or None, region_name=region or None,
                                   config=config)


def open_storage(settings) -> MediaStorage:
    """The storage the settings name (see the module's docstring)."""
    from ..config import ConfigError

    media = settings.media
    if media and media.startswith("s3://"):
        bucket, prefix = parse_s3(media)
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise ConfigError("setting 'media' names an S3 bucket, which needs boto3: "
                              "pip install 'sorakit[fleet]'") from None
        try:
            storage = S3Storage(bucket, prefix, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                                staging=settings.data_dir / UPLOADS, public_url=settings.s3_public_url)
        except ValueError as exc:  # botocore refuses a malformed endpoint URL or region
            raise ConfigError(f"setting 's3_endpoint_url' or 's3_region' cannot be used: {exc}") from None
        if not storage.has_credentials():
            log.warning("media %s: boto3 finds no credentials (AWS_ACCESS_KEY_ID..., a profile or a role): "
                        "nothing can be stored or linked until it does", storage.describe())
        return storage
    if media:
        return LocalStorage(settings.media_dir, settings.media_dir / UPLOADS)
    return LocalStorage(settings.media_dir, settings.data_dir / UPLOADS)
