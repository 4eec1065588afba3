"""``/backend/nf/*``: create, follow and cancel tasks; the quota check (PROTOCOL 2, 3, 5).

The hot routes of the API: each is async and runs its store work on the hot routes' own small
thread pool (``deps.run_hot``), so polls neither wait behind slow routes elsewhere nor fight a
crowd of threads for the GIL.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse

from ..protocol import errors
from ..protocol.models import CreateRequest, StoryboardRequest
from . import create, operations
from .bodies import json_body, openapi_body
from .deps import current_user, get_services, get_shaper, run_hot
from .services import Services
from .shapes import Shaper

router = APIRouter(prefix="/backend/nf", tags=["tasks"])


IdempotencyKey = Header(None, alias="Idempotency-Key", min_length=1, max_length=255)


def created(services: Services, user: dict, task: dict) -> dict:
    """The answer to every creating call: the union of the seed's and the live service's keys."""
    status = task["status"] if task["status"] in ("failed", "cancelled", "succeeded") else "pending"
    return {"id": task["id"], "status": status, "prompt": task["prompt"], "task_type": "video_gen",
            "priority": task["priority"], "operation": task.get("operation") or "generate",
            "n_variants": task.get("n_variants") or 1,
            "rate_limit_and_credit_balance": services.quota.balance(user).wire()}


def _submit(services: Services, user: dict, body: CreateRequest, raw: dict, key: str | None) -> dict:
    return created(services, user, create.submit(services, user, body, raw, key))


@router.post("/create", openapi_extra=openapi_body(CreateRequest))
@router.post("/bulk_create", openapi_extra=openapi_body(CreateRequest))
async def create_task(user: dict = Depends(current_user),
                      parsed: tuple[CreateRequest, dict] = Depends(json_body(CreateRequest)),
                      services: Services = Depends(get_services),
                      idempotency_key: str | None = IdempotencyKey) -> dict:
    """Start a video. With ``remix_target_id`` (a draft ``gen_...`` or a post ``s_...``), remix it;
    with ``nsamples`` > 1, make that many variations in one task (``bulk_create`` is what the web
    page called for those: the same request)."""
    body, raw = parsed
    return await run_hot(_submit, services, user, body, raw, idempotency_key)


def _storyboard(services: Services, user: dict, body: StoryboardRequest, raw: dict, key: str | None) -> dict:
    row = operations.storyboard_row(services, user, body, raw)
    return created(services, user, create.insert(services, user, row, raw, key))


@router.post("/create/storyboard", openapi_extra=openapi_body(StoryboardRequest))
async def create_storyboard(user: dict = Depends(current_user),
                            parsed: tuple[StoryboardRequest, dict] = Depends(json_body(StoryboardRequest)),
                            services: Services = Depends(get_services),
                            idempotency_key: str | None = IdempotencyKey) -> dict:
    """Several shots, each with its prompt and duration, made in order and cut together: the
    ``prompt`` in the web app's ``Shot N:`` text form, or a ``shots`` list."""
    body, raw = parsed
    return await run_hot(_storyboard, services, user, body, raw, idempotency_key)


def _pending(services: Services, user: dict, shaper: Shaper) -> JSONResponse:
    rows = services.store.pending(user["id"], services.settings.finished_window_seconds)
    return JSONResponse(shaper.tasks(rows))


# The two routes every client polls answer a JSONResponse of the shapes themselves: the same JSON
# that FastAPI would make of the returned list, without validating it against ``list[dict]`` first.
@router.get("/pending/v2", response_model=list[dict])
@router.get("/pending", response_model=list[dict])
async def pending(user: dict = Depends(current_user), services: Services = Depends(get_services),
                  shaper: Shaper = Depends(get_shaper)) -> JSONResponse:
    """The caller's unfinished tasks, and those finished within the configured window."""
    return await run_hot(_pending, services, user, shaper)


def _own_task(services: Services, user: dict, task_id: str) -> dict:
    row = services.store.task(task_id, user["id"])
    if row is None:
        raise errors.not_found("task")
    return row


def _task(services: Services, user: dict, shaper: Shaper, task_id: str) -> JSONResponse:
    return JSONResponse(shaper.tasks([_own_task(services, user, task_id)])[0])


@router.get("/tasks/{task_id}/v2", response_model=dict)
@router.get("/tasks/{task_id}", response_model=dict)
async def task(task_id: str, user: dict = Depends(current_user), services: Services = Depends(get_services),
               shaper: Shaper = Depends(get_shaper)) -> JSONResponse:
    """One task, terminal ones included."""
    return await run_hot(_task, services, user, shaper, task_id)


def _cancel(services: Services, user: dict, shaper: Shaper, task_id: str) -> dict:
    _own_task(services, user, task_id)
    row = services.store.request_cancel(task_id, user["id"])
    return shaper.tasks([row])[0]


@router.post("/tasks/{task_id}/cancel")
async def cancel(task_id: str, user: dict = Depends(current_user), services: Services = Depends(get_services),
                 shaper: Shaper = Depends(get_shaper)) -> dict:
    """sorakit's own extension: cancel a task. Queued ones stop at once, running ones within a
    second. Cancelling a finished task changes nothing and answers its current state."""
    return await run_hot(_cancel, services, user, shaper, task_id)


def _check(services: Services, user: dict) -> dict:
    balance = services.quota.balance(user)
    return {"rate_limit_and_credit_balance": balance.wire(),
            "concurrency_limit": services.quota.concurrency(user),
            "tasks_in_progress": services.store.count_active(user["id"])}


@router.get("/check")
async def check(user: dict = Depends(current_user), services: Services = Depends(get_services)) -> dict:
    """The caller's quota: videos left in the rolling 24 hours and when the next one frees up."""
    return await run_hot(_check, services, user)
