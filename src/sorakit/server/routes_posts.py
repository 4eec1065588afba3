"""Posts: share a finished video under a public permalink (PROTOCOL section 2).

- ``POST /backend/project_y/post``: post one of the caller's drafts.
- ``GET /backend/project_y/post/{id}``: a live post, for any signed-in user (posts are public).
- ``DELETE /backend/project_y/post/{id}``: the poster takes it down (404 for anyone else).
- ``GET /p/{id}``: the permalink, an HTML page anyone can open without signing in. It shows the
  video and the post's text and nothing about the poster.

The rows live in ``store/posts.py``.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from ..protocol import errors
from ..protocol.errors import ApiError
from ..protocol.models import ITEMS, NAME, TEXT
from ..store import posts as post_store
from .bodies import json_body, openapi_body
from .deps import current_user, get_services, get_shaper
from .routes_web import content_security_policy
from .services import Services
from .shapes import ENCODINGS, Shaper

router = APIRouter(tags=["posts"])
# Links the public page hands out live an hour (not link_ttl_seconds): once a post is taken down,
# links copied from its page stop working soon, while the draft's own links are unaffected.
PAGE_LINK_TTL = 3600.0


def refuse_term(services: Services, text: str | None, what: str, param: str) -> None:
    """A 400 ``content_policy_violation`` when ``text`` holds a blocked term (never echoed)."""
    if text and services.blocklist.first_match(text) is not None:
        raise ApiError(400, "content_policy_violation", f"{what} was refused: it contains a term this "
                       "server does not allow. Edit it and try again.", param=param)


class Attachment(BaseModel):
    model_config = ConfigDict(extra="allow")

    generation_id: str = Field(min_length=1, max_length=NAME)
    kind: str | None = Field("sora", max_length=NAME)


class PostRequest(BaseModel):
    """``POST /backend/project_y/post``. Unknown keys are accepted (bounded) and ignored."""

    model_config = ConfigDict(extra="allow")

    attachments_to_create: list[Attachment] = Field(max_length=ITEMS)
    post_text: str | None = Field(None, max_length=TEXT)


def public_attachment(shaper: Shaper, gen: dict) -> dict[str, Any]:
    """A post's video as anyone but its poster sees it: the picture and its links (as short-lived
    as the page's), nothing of how it was made or of the task behind it."""
    ttl = min(PAGE_LINK_TTL, float(shaper.services.settings.link_ttl_seconds))

    def link(name: str, column: str) -> str | None:
        return shaper.link(gen["id"], name, ttl=ttl) if gen[column] else None

    video, thumb = link("video.mp4", "video_file"), link("thumbnail.webp", "thumbnail_file")
    encodings = {name: None for name in ENCODINGS}
    if video:
        encodings.update(source={"path": video}, source_wm={"path": video}, md={"path": video})
    if thumb:
        encodings["thumbnail"] = {"path": thumb}
    return {"id": gen["id"], "generation_id": gen["id"], "kind": gen["kind"], "url": video,
            "downloadable_url": video, "video_url": video, "download_url": video, "thumbnail_url": thumb,
            "encodings": encodings, "width": gen["width"], "height": gen["height"], "n_frames": gen["n_frames"],
            "created_at": gen["created_at"]}


def post_shape(shaper: Shaper, post: dict, gen: dict, remixes: int, *, own: bool = True) -> dict[str, Any]:
    """A post as the API answers it: every key, always. Its poster sees the whole draft; anyone
    else the public attachment only."""
    attachment = shaper.draft(gen) if own else public_attachment(shaper, gen)
    return {
        "id": post["id"], "permalink": f"{shaper.base_url}/p/{post['id']}",
        "text": post["post_text"], "post_text": post["post_text"],
        "posted_at": post["created_at"], "created_at": post["created_at"],
        "attachments": [attachment], "generation_id": gen["id"], "kind": "sora",
        "like_count": 0, "view_count": 0, "remix_count": remixes,
    }


def _draft_to_post(services: Services, user: dict, body: PostRequest) -> dict:
    items = body.attachments_to_create
    if len(items) != 1:
        raise errors.invalid_request("attachments_to_create takes exactly one attachment: the draft to "
                                     "post.", "attachments_to_create")
    item = items[0]
    if item.kind not in (None, "sora"):
        raise errors.invalid_request("attachments_to_create[0].kind must be 'sora' (a video draft).",
                                     "attachments_to_create[0].kind")
    gen = services.store.generation(item.generation_id, user["id"])
    param = "attachments_to_create[0].generation_id"
    if gen is None:
        raise errors.invalid_request(f"{param}: you have no draft with this id.", param)
    if gen["kind"] != "sora_draft" or not gen["video_file"]:
        raise errors.invalid_request(f"{param}: this draft is not a finished video, so it cannot be "
                                     "posted.", param)
    return gen


@router.post("/backend/project_y/post", openapi_extra=openapi_body(PostRequest))
def create_post(user: dict = Depends(current_user),
                parsed: tuple[PostRequest, dict] = Depends(json_body(PostRequest)),
                services: Services = Depends(get_services), shaper: Shaper = Depends(get_shaper)) -> dict:
    """Post one of your finished drafts; the answer's ``permalink`` opens without signing in."""
    body, _raw = parsed
    gen = _draft_to_post(services, user, body)
    refuse_term(services, body.post_text, "The post text", "post_text")
    try:
        post = post_store.create_post(services.store, user["id"], gen["id"], body.post_text)
    except post_store.DraftGone:  # deleted between the check and the insert
        raise errors.invalid_request("attachments_to_create[0].generation_id: you have no draft with "
                                     "this id.", "attachments_to_create[0].generation_id") from None
    return {"post": post_shape(shaper, post, gen, 0)}


@router.get("/backend/project_y/post/{post_id}")
def get_post(post_id: str, user: dict = Depends(current_user), services: Services = Depends(get_services),
             shaper: Shaper = Depends(get_shaper)) -> dict:
    """A live post, anyone's: posts are public."""
    found = post_store.get_post_with_generation(services.store, post_id)
    if found is None:
        raise errors.not_found("post")
    post, gen = found
    return {"post": post_shape(shaper, post, gen, post_store.remix_count(services.store, post_id),
                               own=post["user_id"] == user["id"])}


@router.delete("/backend/project_y/post/{post_id}")
def delete_post(post_id: str, user: dict = Depends(current_user),
                services: Services = Depends(get_services)) -> dict:
    """Take your post down: its page and API answers are 404 at once; the draft stays."""
    if not post_store.delete_post(services.store, post_id, user["id"]):
        raise errors.not_found("post")
    return {"id": post_id, "deleted": True}


# -- the permalink page ------------------------------------------------------------------------
# One style block, allowed by its hash: the web app's CSP forbids inline styles otherwise. Colours
# follow web/static/app.css, light and dark.
PAGE_STYLE = """
:root { color-scheme: light dark; --bg: #f6f7fb; --surface: #ffffff; --text: #161a23; --muted: #5b6273;
  --border: #d6dae4; --media-bg: #0d0f14;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Liberation Sans", sans-serif;
  font-size: 16px; line-height: 1.5; }
@media (prefers-color-scheme: dark) { :root { --bg: #0f1117; --surface: #181b24; --text: #e7e9f0;
  --muted: #9aa1b2; --border: #2f3443; } }
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; display: flex; flex-direction: column; align-items: center;
  background: var(--bg); color: var(--text); }
main { flex: 1; width: 100%; max-width: 48rem; padding: clamp(1rem, 4vw, 2.5rem) 1rem;
  display: flex; flex-direction: column; align-items: center; gap: 1.25rem; }
video { display: block; max-width: 100%; max-height: 75vh; width: auto; height: auto;
  background: var(--media-bg); border-radius: 12px; }
.text { margin: 0; max-width: 40rem; width: 100%; padding: 1rem 1.25rem; background: var(--surface);
  border: 1px solid var(--border); border-radius: 12px; white-space: pre-wrap; overflow-wrap: anywhere;
  font-size: 1.05rem; }
.gone { margin-top: 20vh; text-align: center; }
h1 { font-size: 1.4rem; margin: 0 0 0.5rem; }
footer { padding: 1rem; color: var(--muted); font-size: 0.85rem; }
"""
STYLE_HASH = "'sha256-" + base64.b64encode(hashlib.sha256(PAGE_STYLE.encode()).digest()).decode() + "'"


def page_csp(public_base_url: str | None, media_origin: str | None = None) -> str:
    """The web app's policy, its ``style-src`` also allowing this page's one style block."""
    directives = content_security_policy(public_base_url, media_origin).split("; ")
    styled = [f"{d} {STYLE_HASH}" if d.startswith("style-src ") else d for d in directives]
    if styled == directives:
        styled.append(f"style-src {STYLE_HASH}")
    return "; ".join(styled)


def _page(services: Services, title: str, content: str, status: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n<meta name="referrer" content="no-referrer">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="icon" href="/static/icon.svg" type="image/svg+xml">\n'
        f"<style>{PAGE_STYLE}</style>\n</head>\n<body>\n<main>\n{content}\n</main>\n"
        "<footer>made with sorakit</footer>\n</body>\n</html>\n")
    headers = {"Content-Security-Policy": page_csp(services.settings.public_base_url, services.media.origin),
               "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
               # signed links inside, and a taken-down post must vanish: never kept
               "Cache-Control": "no-store"}
    return HTMLResponse(document, status_code=status, headers=headers)


def _title(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    first = lines[0].strip() if lines else ""
    if not first:
        return "A video made with sorakit"
    return (first if len(first) <= 70 else first[:69].rstrip() + "\u2026") + " \u00b7 sorakit"


@router.api_route("/p/{post_id}", methods=["GET", "HEAD"], response_class=HTMLResponse,
                  include_in_schema=False)
def permalink(post_id: str, services: Services = Depends(get_services),
              shaper: Shaper = Depends(get_shaper)) -> HTMLResponse:
    """The public page of a post: its video and text, with no credentials and nothing about the
    poster. A deleted or unknown post is a 404 page."""
    found = post_store.get_post_with_generation(services.store, post_id)
    if found is None:
        return _page(services, "Post not found \u00b7 sorakit",
                     '<div class="gone"><h1>Not found</h1>'
                     "<p>This post does not exist or was deleted.</p></div>", 404)
    post, gen = found
    ttl = min(PAGE_LINK_TTL, float(services.settings.link_ttl_seconds))

    def link(name: str) -> str:
        return html.escape(shaper.link(gen["id"], name, ttl=ttl))

    poster = f' poster="{link("thumbnail.webp")}"' if gen["thumbnail_file"] else ""
    size = "".join(f' {k}="{int(gen[k])}"' for k in ("width", "height") if gen[k])
    text = post["post_text"] or ""
    content = (f'<video controls playsinline preload="metadata" src="{link("video.mp4")}"{poster}{size}>'
               "</video>")
    if text.strip():
        content += f'\n<p class="text">{html.escape(text)}</p>'
    return _page(services, _title(text), content)
