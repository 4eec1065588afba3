"""Building on a video: remix, extend, storyboard and variations, for every door.

Each operation is a task like any other (one store, one quota, one queue) whose ``operation`` and
``inputs`` columns tell the worker what to do:

| operation | inputs | the task's size, frames, fps |
|---|---|---|
| ``generate`` (NULL) | none | the engine's plan |
| ``remix`` | ``source_generation_id``, ``source_post_id``, ``strength`` | the engine's plan |
| ``extend`` | ``source_generation_id``, ``seconds``, ``source_frames``, ``extension_frames``, ``engine_plan`` | the source's size and fps; frames = source + extension |
| ``storyboard`` | ``shots`` (``prompt``, ``seconds``, ``n_frames``), ``instructions``, ``continuity`` | the engine's plan; frames = sum of the shots |

``n_variants`` (generate and remix) makes one task with that many drafts, seeds ``seed + i``.
The engine is asked the same question by every door: ``engine.unsupported(operation)``.
"""

from __future__ import annotations

import re
from typing import Any

from ..engines.base import Plan
from ..protocol import errors
from . import create
from .services import Services

POST_ID = re.compile(r"^s_[0-9a-f]{32}$")
SHOT_HEADER = re.compile(r"^\s*shot\s+(\d+)\s*:?\s*$", re.IGNORECASE)
DURATION_LINE = re.compile(r"^\s*duration\s*:\s*([0-9]*\.?[0-9]+)\s*(?:s|sec|secs|seconds)?\s*$", re.IGNORECASE)
SCENE_LINE = re.compile(r"^\s*scene\s*:\s*(.*)$", re.IGNORECASE)


# -- sources --------------------------------------------------------------------------------
def source_of(services: Services, user: dict, target: str, param: str, *,
              posts_allowed: bool = True) -> tuple[dict, str | None]:
    """The finished draft a remix or an extension starts from, and the post it was reached by.

    A draft (``gen_...``) must be the caller's own; a post (``s_...``) is public, so anyone may
    build on it, until it is deleted.
    """
    post_id = None
    if posts_allowed and POST_ID.match(target):
        from ..store import posts

        post = posts.get_post(services.store, target)
        if post is None:
            raise errors.invalid_request(f"{param} names no post (it may have been deleted).", param)
        gen, post_id = services.store.generation(post["generation_id"]), post["id"]
    else:
        gen = services.store.generation(target, user["id"]) if target.startswith("gen_") else None
        if gen is None and param == "gen_id":  # a path that names no draft of the caller's
            raise errors.not_found("draft")
        if gen is None:
            kinds = "a draft of yours (gen_...) or a post (s_...)" if posts_allowed else "a draft of yours (gen_...)"
            raise errors.invalid_request(f"{param} must name {kinds}; {create.show(target)} is neither.", param)
    if gen is None or gen["kind"] != "sora_draft" or not gen["video_file"]:
        raise errors.invalid_request(f"{param} names a draft without a video (a refused or failed "
                                     "generation); only finished videos can be built on.", param)
    return gen, post_id


def source_settings(gen: dict) -> dict[str, Any]:
    """What the source was made with (its creation config), for defaults of the new task."""
    meta = gen.get("meta") or {}
    config = meta.get("creation_config") or {}
    width, height = gen["width"], gen["height"]
    orientation = config.get("orientation") or ("portrait" if height > width else
                                                "landscape" if width > height else "square")
    size = config.get("size") if config.get("size") in ("small", "large") else "small"
    return {"orientation": orientation, "size": size, "model": config.get("model"),
            "fps": meta.get("fps") or 30, "prompt": meta.get("prompt") or ""}


def check_operation(engine_name: str, engine, model: str, operation: str, param: str) -> None:
    reason = engine.unsupported(operation)
    if reason:
        raise errors.invalid_request(f"Model {create.show(model)} cannot do this here: {reason}.", param)


def source_model(services: Services, requested: str | None, source: dict) -> tuple[str, str, Any]:
    """The model of a new task built on ``source``: the one asked for, else the source's own
    (when this server still has it), else the default."""
    if requested:
        return (requested, *create.engine_for(services, requested))
    model = source.get("model")
    if model:
        try:
            return (model, *create.engine_for(services, model))
        except errors.ApiError:
            pass
    return ("sy_8", *create.engine_for(services, "sy_8"))


# -- variations -------------------------------------------------------------------------------
def variants_of(services: Services, raw: dict) -> int:
    """``nsamples`` (the web page's name) or ``n_variants`` (the official API's), 1 by default."""
    value = raw.get("nsamples", raw.get("n_variants"))
    if value is None:
        return 1
    param = "nsamples" if "nsamples" in raw else "n_variants"
    most = services.settings.max_variants
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise errors.invalid_request(f"{param} must be a whole number from 1 to {most}.", param)
    return value


# -- remix ------------------------------------------------------------------------------------
def strength_of(raw: dict) -> float | None:
    value = raw.get("remix_strength")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise errors.invalid_request("remix_strength must be a number from 0 (keep the source) to 1 "
                                     "(ignore it).", "remix_strength")
    return float(value)


def remix_row(services: Services, user: dict, req, raw: dict, target: str) -> dict:
    """``nf/create`` with ``remix_target_id``: the new prompt over the source video."""
    gen, post_id = source_of(services, user, target, "remix_target_id")
    src = source_settings(gen)
    prompt = create.check_prompt(req.prompt, services.settings.max_prompt_chars)
    model, engine_name, engine = source_model(services, req.model, src)
    check_operation(engine_name, engine, model, "remix", "remix_target_id")
    orientation = req.orientation or src["orientation"]
    size = req.size or src["size"]
    n_frames = req.n_frames or min(round((gen["n_frames"] or 1) / src["fps"] * 30), services.settings.max_frames)
    create.check_choices(services, orientation, size, n_frames)
    plan = engine.plan(orientation, size, n_frames)
    row = create.task_row(services, user["id"], prompt=prompt, model=model, engine=engine_name, plan=plan,
                          orientation=orientation, size=size, items=[], request=raw, title=req.title,
                          style_id=req.style_id, seed=req.seed)
    row.update(operation="remix", n_variants=variants_of(services, raw),
               inputs={"source_generation_id": gen["id"], "source_task_id": gen["task_id"],
                       "source_post_id": post_id, "strength": strength_of(raw)})
    return row


# -- extend -----------------------------------------------------------------------------------
def extension_row(services: Services, user: dict, gen_id: str, prompt: str | None, seconds: Any,
                  raw: dict, *, model: str | None = None, param_seconds: str = "extension_duration_s",
                  param_source: str = "gen_id") -> dict:
    """Continue a draft by ``seconds``; the draft it makes is the source plus the extension."""
    gen, _ = source_of(services, user, gen_id, param_source, posts_allowed=False)
    src = source_settings(gen)
    fps, source_frames = src["fps"], gen["n_frames"]
    # the whole video stays within max_frames (at 30 fps), so extensions cannot chain past it
    most = round(services.settings.max_frames / 30 - source_frames / fps, 2)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= most:
        if most <= 0:
            raise errors.invalid_request(f"This draft already lasts {source_frames / fps:g} s, the longest a "
                                         f"video may be here ({services.settings.max_frames / 30:g} s); it "
                                         "cannot be extended.", param_seconds)
        raise errors.invalid_request(f"{param_seconds} must be a number of seconds above 0 and at most "
                                     f"{most:g} (a video lasts at most {services.settings.max_frames / 30:g} s "
                                     "here).", param_seconds)
    text = (prompt or "").strip() or src["prompt"]
    text = create.check_prompt(text, services.settings.max_prompt_chars)
    model, engine_name, engine = source_model(services, model, src)
    check_operation(engine_name, engine, model, "extend", param_source)
    engine_plan = engine.plan(src["orientation"], src["size"], max(round(seconds * 30), 1), image=True)
    longest = engine_plan.n_frames / engine_plan.fps
    if seconds > longest + 0.05:
        raise errors.invalid_request(f"Model {create.show(model)} continues a video by at most {longest:g} s "
                                     "at a time; extend in several steps.", param_seconds)
    if _shape(engine_plan) != _shape(gen):
        raise errors.invalid_request(f"Model {create.show(model)} extends only {_shape(engine_plan)} "
                                     f"videos (its image-to-video model makes {engine_plan.width}x"
                                     f"{engine_plan.height}); this draft is {gen['width']}x{gen['height']}.",
                                     param_source)
    extension_frames = max(round(seconds * fps), 1)
    plan = Plan(gen["width"], gen["height"], source_frames + extension_frames, fps)
    row = create.task_row(services, user["id"], prompt=text, model=model, engine=engine_name, plan=plan,
                          orientation=src["orientation"], size=src["size"], items=[], request=raw,
                          title=(gen.get("meta") or {}).get("title"))
    row.update(operation="extend", n_variants=1, inputs={
        "source_generation_id": gen["id"], "source_task_id": gen["task_id"], "seconds": float(seconds),
        "source_frames": source_frames,
        "extension_frames": extension_frames,
        "engine_plan": {"width": engine_plan.width, "height": engine_plan.height,
                        "n_frames": engine_plan.n_frames, "fps": engine_plan.fps}})
    return row


# -- storyboard -------------------------------------------------------------------------------
def parse_timeline(text: str) -> tuple[list[dict], str | None]:
    """The web app's storyboard text: ``Shot N:`` blocks with ``duration: 5.0sec`` and
    ``Scene: ...`` lines (the scene may run over several lines), then ``instructions:``."""
    shots: list[dict] = []
    instructions: list[str] | None = None
    current: dict | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if instructions is not None:
            instructions.append(line)
        elif SHOT_HEADER.match(stripped):
            current = {"prompt": "", "seconds": None}
            shots.append(current)
        elif stripped.lower().rstrip(":") == "instructions":
            instructions = []
        elif current is not None and (m := DURATION_LINE.match(stripped)):
            current["seconds"] = float(m.group(1))
        elif current is not None and (m := SCENE_LINE.match(stripped)):
            current["prompt"] = m.group(1).strip()
        elif current is not None and stripped and current["prompt"]:
            current["prompt"] += " " + stripped
    note = "\n".join(instructions).strip() if instructions is not None else None
    return shots, note or None


def shots_of(services: Services, raw: dict, prompt: str | None) -> tuple[list[dict], str | None]:
    given = raw.get("shots")
    if given is not None:
        if not isinstance(given, list):
            raise errors.invalid_request("shots must be a list of {prompt, duration_s} objects.", "shots")
        shots = [_shot_from_json(s, i) for i, s in enumerate(given)]
        instructions = raw.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise errors.invalid_request("instructions must be text.", "instructions")
        return shots, instructions
    shots, instructions = parse_timeline(prompt or "")
    if not shots:
        raise errors.invalid_request("A storyboard needs shots: a `shots` list, or a prompt with "
                                     "`Shot 1:` blocks holding `duration: 5.0sec` and `Scene: ...` lines.",
                                     "prompt")
    for i, shot in enumerate(shots):
        if shot["seconds"] is None:
            raise errors.invalid_request(f"Shot {i + 1} has no `duration: N sec` line.", "prompt")
        if not shot["prompt"]:
            raise errors.invalid_request(f"Shot {i + 1} has no `Scene: ...` line.", "prompt")
    return shots, instructions


def _shot_from_json(shot: Any, index: int) -> dict:
    param = f"shots[{index}]"
    if not isinstance(shot, dict):
        raise errors.invalid_request(f"{param} must be an object with prompt and duration_s.", param)
    prompt = shot.get("prompt", shot.get("scene"))
    seconds = shot.get("duration_s", shot.get("seconds"))
    if seconds is None and isinstance(shot.get("n_frames"), int) and not isinstance(shot.get("n_frames"), bool):
        seconds = shot["n_frames"] / 30
    if not isinstance(prompt, str) or not prompt.strip():
        raise errors.invalid_request(f"{param}.prompt must be non-empty text.", f"{param}.prompt")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise errors.invalid_request(f"{param}.duration_s must be a number of seconds.", f"{param}.duration_s")
    return {"prompt": prompt, "seconds": float(seconds)}


def _shape(thing) -> str:
    width, height = (thing["width"], thing["height"]) if isinstance(thing, dict) else (thing.width, thing.height)
    return "portrait" if height > width else "landscape" if width > height else "square"


def timeline_text(shots: list[dict], instructions: str | None) -> str:
    """A storyboard as the web app wrote it: the task's prompt, and what moderation reads."""
    blocks = [f"Shot {i + 1}:\nduration: {s['seconds']:g}sec\nScene: {s['prompt']}" for i, s in enumerate(shots)]
    text = "current timeline:\n" + "\n\n".join(blocks)
    return text + (f"\n\ninstructions:\n{instructions}" if instructions else "")


def storyboard_row(services: Services, user: dict, req, raw: dict) -> dict:
    s = services.settings
    shots, instructions = shots_of(services, raw, req.prompt)
    if not 1 <= len(shots) <= s.max_shots:
        raise errors.invalid_request(f"A storyboard takes 1 to {s.max_shots} shots; got {len(shots)}.", "shots")
    total = 0.0
    for i, shot in enumerate(shots):
        shot["prompt"] = create.check_prompt(shot["prompt"], s.max_prompt_chars)
        if not 0 < shot["seconds"] <= s.max_frames / 30:
            raise errors.invalid_request(f"Shot {i + 1} lasts {shot['seconds']:g} s; a shot lasts more than 0 "
                                         f"and at most {s.max_frames / 30:g} seconds.", "shots")
        total += shot["seconds"]
    if total * 30 > s.max_frames:
        raise errors.invalid_request(f"The shots last {total:g} s together; a storyboard lasts at most "
                                     f"{s.max_frames / 30:g} seconds.", "shots")
    model = req.model or "sy_8"
    engine_name, engine = create.engine_for(services, model)
    orientation = req.orientation or "portrait"
    size = req.size or "small"
    create.check_choices(services, orientation, size, 1)
    continuity = bool(raw.get("continuity"))
    if continuity:
        check_operation(engine_name, engine, model, "image", "continuity")
    plans = [engine.plan(orientation, size, max(round(shot["seconds"] * 30), 1), image=continuity) for shot in shots]
    if continuity and _shape(plans[0]) != _shape(engine.plan(orientation, size, 30)):
        raise errors.invalid_request(f"Model {create.show(model)} cannot keep continuity in {orientation} "
                                     f"shots (its image-to-video model makes {plans[0].width}x{plans[0].height} "
                                     "only); drop continuity or change orientation.", "continuity")
    for shot, plan in zip(shots, plans):
        shot["n_frames"] = plan.n_frames
    first = plans[0]
    plan = Plan(first.width, first.height, sum(p.n_frames for p in plans), first.fps)
    timeline = timeline_text(shots, instructions)
    if len(timeline) > s.max_prompt_chars:
        raise errors.invalid_request(f"The storyboard's shots and instructions are {len(timeline)} characters "
                                     f"together; the limit is {s.max_prompt_chars}.", "shots")
    row = create.task_row(services, user["id"], prompt=timeline, model=model,
                          engine=engine_name, plan=plan, orientation=orientation, size=size, items=[],
                          request=raw, title=req.title, style_id=req.style_id, seed=req.seed)
    row.update(operation="storyboard", n_variants=1,
               inputs={"shots": shots, "instructions": instructions, "continuity": continuity})
    return row
