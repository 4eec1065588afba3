"""``POST /backend/nf/create``: validate a request, map it onto a task, admit it past moderation."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

from ..ids import new_id
from ..moderation import violation_reasons
from ..protocol import errors
from ..protocol.bounds import safe_name
from ..protocol.models import CreateRequest
from ..store import IdempotencyConflict
from .services import Services

DEFAULT_FRAMES = 300
DATED_SY8 = re.compile(r"^sy_8_\d{8}$")
#: the official API's ids: sora-2, sora-2-pro, and dated snapshots of either
SORA_ID = re.compile(r"^sora-2(-pro)?(-\d{4}-\d{2}-\d{2})?$")


def resolve_engine(services: Services, model: str) -> str:
    """The engine a request's ``model`` id runs on, or a 400 naming what is accepted.

    A configured name wins (an alias, or a model of its own); ``sy_8``, ``sy_ore`` and dated
    ``sy_8_*`` ids run on the default engine.
    """
    aliases = services.settings.models
    if model in aliases:
        target = aliases[model]
        return target if isinstance(target, str) else model
    if model in ("sy_8", "sy_ore") or DATED_SY8.match(model) or SORA_ID.match(model):
        return services.settings.default_engine
    if model in services.engines:
        return model
    accepted = ", ".join(["sy_8", "sy_ore", "sy_8_YYYYMMDD", "sora-2", "sora-2-pro", *aliases,
                          *services.engines])
    raise errors.invalid_request(f"Unknown model {show(model)}. Accepted: {accepted}.", "model")


def engine_for(services: Services, model: str):
    name = resolve_engine(services, model)
    engine = services.engines.get(name)
    if engine is None:
        raise errors.invalid_request(f"Model {show(model)} maps to {name!r}, which this server does not have.",
                                     "model")
    reason = engine.unavailable()
    if reason:
        raise errors.invalid_request(f"Model {show(model)} cannot run here: {reason}", "model")
    return name, engine


def _image_items(services: Services, items: list[dict] | None, user_id: str, engine, model: str) -> list:
    """Validate ``inpaint_items``: at most one uploaded image, owned by the caller."""
    if not items:
        return []
    if len(items) > 1 or not isinstance(items[0], dict) or items[0].get("kind") != "upload":
        raise errors.invalid_request("inpaint_items takes one item of kind 'upload' (an image posted to "
                                     "/backend/uploads); other kinds are not supported.", "inpaint_items")
    upload = services.store.upload(str(items[0].get("upload_id")), user_id)
    if upload is not None and not upload["mime"].startswith("image/"):
        raise errors.invalid_request("inpaint_items names an uploaded video; image-to-video starts from an "
                                     "image.", "inpaint_items")
    if upload is None:
        raise errors.invalid_request("inpaint_items names an upload that does not exist.", "inpaint_items")
    if not engine.supports_image:
        raise errors.invalid_request(f"Model {show(model)} has no image-to-video pipeline here.", "inpaint_items")
    return [{"kind": "upload", "upload_id": upload["id"]}]


def show(value: str) -> str:
    """A client's value quoted in an error: short, so a huge field is never echoed back."""
    return repr(safe_name(value))


def _choice(value: str | None, default: str, allowed: tuple[str, ...], param: str) -> str:
    value = default if value is None else value
    if value not in allowed:
        raise errors.invalid_request(f"{param} must be one of {', '.join(allowed)}; got {show(value)}.", param)
    return value


def check_prompt(prompt: str, limit: int) -> str:
    text = prompt.strip()
    if not text:
        raise errors.invalid_request("prompt must not be empty.", "prompt")
    if len(text) > limit:
        raise errors.invalid_request(f"prompt is {len(text)} characters; the limit is {limit}.", "prompt")
    return text


def check_choices(services: Services, orientation: str, size: str, n_frames: int) -> None:
    _choice(orientation, "portrait", ("portrait", "landscape", "square"), "orientation")
    _choice(size, "small", ("small", "large"), "size")
    if not 1 <= n_frames <= services.settings.max_frames:
        raise errors.invalid_request(f"n_frames must be from 1 to {services.settings.max_frames}; got "
                                     f"{n_frames}.", "n_frames")


def image_orientation(upload: dict) -> str:
    """The orientation an image asks for when the request names none (I2V follows its aspect)."""
    width, height = upload["width"], upload["height"]
    if abs(width - height) <= 0.05 * max(width, height):
        return "square"
    return "landscape" if width > height else "portrait"


def build_row(services: Services, req: CreateRequest, raw: dict[str, Any], user_id: str) -> dict:
    from .operations import remix_row, variants_of

    if req.remix_target_id:
        if req.inpaint_items:
            raise errors.invalid_request("A remix starts from its target video; send either "
                                         "remix_target_id or inpaint_items, not both.", "inpaint_items")
        return remix_row(services, {"id": user_id}, req, raw, req.remix_target_id)
    s = services.settings
    prompt = check_prompt(req.prompt, s.max_prompt_chars)
    model = req.model or "sy_8"
    engine_name, engine = engine_for(services, model)
    items = _image_items(services, req.inpaint_items, user_id, engine, model)
    default_orientation = image_orientation(services.store.upload(items[0]["upload_id"])) if items else "portrait"
    orientation = _choice(req.orientation, default_orientation, ("portrait", "landscape", "square"), "orientation")
    size = _choice(req.size, "small", ("small", "large"), "size")
    n_frames = DEFAULT_FRAMES if req.n_frames is None else req.n_frames
    check_choices(services, orientation, size, n_frames)
    plan = engine.plan(orientation, size, n_frames, image=bool(items))  # the real size and frames
    row = task_row(services, user_id, prompt=prompt, model=model, engine=engine_name, plan=plan,
                   orientation=orientation, size=size, items=items, request=raw, title=req.title,
                   style_id=req.style_id, seed=req.seed)
    row["n_variants"] = variants_of(services, raw)
    return row


def task_row(services: Services, user_id: str, *, prompt: str, model: str, engine: str, plan,
             orientation: str, size: str, items: list, request: dict, title: str | None = None,
             style_id: str | None = None, seed: int | None = None) -> dict:
    """A new task as every door inserts it (PROTOCOL 2 for /backend, 7 for /v1)."""
    return {
        "id": new_id("task"), "user_id": user_id, "status": "preprocessing", "prompt": prompt,
        "title": title, "model": model, "engine": engine, "orientation": orientation, "size": size,
        "n_frames": plan.n_frames, "width": plan.width, "height": plan.height, "fps": plan.fps,
        "style_id": style_id, "inpaint_items": items,
        # A seed is always recorded, so every video can be made again.
        "seed": seed if seed is not None else secrets.randbelow(2**31),
        "request": request, "priority": 1, "progress": None, "failure_reason": None,
        "created_at": services.store.clock(), "attempts": 0, "cancel_requested": False,
        # what the task does beyond text/image to video (server/operations.py sets these)
        "operation": "generate", "inputs": None, "n_variants": 1,
    }


def body_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def submit(services: Services, user: dict, req: CreateRequest, raw: dict, idem_key: str | None) -> dict:
    """Create (or replay) a task; returns its row. Raises ApiError for refusals."""
    return insert(services, user, build_row(services, req, raw, user["id"]), raw, idem_key)


def insert(services: Services, user: dict, row: dict, raw: dict, idem_key: str | None, *,
           fresh_key: bool = False) -> dict:
    """Insert a built task past the quota (or replay the key's task) and admit it; every door's
    create ends here. ``fresh_key``: the key now names this new task instead of replaying."""
    hint = _retry_hint(services)
    try:
        row, replayed = services.store.create_task(
            row, idem_key, body_hash(raw), check=lambda usage: services.quota.check_create(user, hint, usage, cost=row.get("n_variants") or 1),
            replace_key=fresh_key)
    except IdempotencyConflict:
        raise errors.idempotency_conflict() from None
    if not replayed:
        admit(services, row)
    return services.store.task(row["id"])


def _retry_hint(services: Services) -> int:
    return max(5, int(services.settings.preview_pace) or 5)


def admit(services: Services, row: dict) -> None:
    """Moderation, then preprocessing -> queued; a refused prompt fails with a violation draft."""
    term = services.blocklist.first_match(row["prompt"])
    if term is None:
        services.store.admit(row["id"])
        services.work_ready.set()
        return
    plain, markdown = violation_reasons(term)
    services.store.fail_unclaimed(row["id"], plain, generation={
        "id": new_id("gen"), "task_id": row["id"], "user_id": row["user_id"],
        "kind": "sora_content_violation", "created_at": services.store.clock(),
        "reason_str": plain, "error_reason": "content_violation",
        "meta": {"prompt": row["prompt"], "title": row["title"], "markdown_reason_str": markdown,
                 "creation_config": creation_config(row)},
    })


def creation_config(row: dict) -> dict[str, Any]:
    """What a draft was made from (PROTOCOL 4): the request, and the video it builds on."""
    inputs = row.get("inputs") or {}
    post = inputs.get("source_post_id")
    return {"prompt": row["prompt"], "n_frames": row["n_frames"], "orientation": row["orientation"],
            "size": row["size"], "model": row["model"], "seed": row["seed"], "style_id": row["style_id"],
            "inpaint_image": (row.get("inpaint_items") or [None])[0], "storyboard_id": None,
            "cameo_profiles": None, "remix_target_post": {"id": post} if post else None,
            "operation": row.get("operation") or "generate",
            "source_generation_id": inputs.get("source_generation_id"),
            "remix_strength": inputs.get("strength"), "extension_duration_s": inputs.get("seconds"),
            "shots": inputs.get("shots"), "n_variants": row.get("n_variants") or 1}
