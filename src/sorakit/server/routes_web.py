"""The web app: ``GET /`` (the page) and ``GET /static/{file}`` (its script, styles and icon).

The page is a client of ``/api/auth/*`` and ``/backend`` like any script. Every answer carries a
strict Content-Security-Policy: no inline script or style, nothing fetched from elsewhere, except
signed media links when ``public_base_url`` puts them on another origin (or when they are a
bucket's presigned URLs: ``media = "s3://..."``).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from ..protocol import errors
from ..web import STATIC_DIR
from .deps import get_services
from .services import Services

router = APIRouter(include_in_schema=False)
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# a plain file name with a known extension: no path separators, no dot files, no traversal
_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(html|js|css|svg)$")
# short: a new sorakit version reaches open tabs within minutes, yet a reload costs no refetch
STATIC_CACHE = "public, max-age=300"


def _origin(url: str | None) -> str | None:
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def content_security_policy(public_base_url: str | None, media_origin: str | None = None) -> str:
    """The policy; ``media_origin`` is where presigned media links point (a bucket), if anywhere."""
    media = " ".join(dict.fromkeys(filter(None, ["'self'", _origin(public_base_url), _origin(media_origin)])))
    return "; ".join([
        "default-src 'self'", "script-src 'self'", "style-src 'self'",
        f"img-src {media} data: blob:", f"media-src {media} blob:", "connect-src 'self'",
        "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "form-action 'self'",
    ])


def _headers(services: Services, cache: str) -> dict[str, str]:
    return {"Content-Security-Policy": content_security_policy(services.settings.public_base_url,
                                                               services.media.origin),
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Cache-Control": cache}


def _file(name: str, services: Services, cache: str) -> FileResponse:
    path = STATIC_DIR / name
    if not _SAFE_NAME.match(name) or not path.is_file():
        raise errors.not_found("file")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=_headers(services, cache))


@router.get("/")
def index(services: Services = Depends(get_services)) -> FileResponse:
    # no-cache: the page names its script and styles, so it must be checked on every visit
    return _file("index.html", services, "no-cache")


@router.get("/static/{name}")
def static(name: str, services: Services = Depends(get_services)) -> FileResponse:
    return _file(name, services, STATIC_CACHE)
