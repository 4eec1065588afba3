"""``/backend/nf/*``: create, follow and cancel tasks; the quota check (PROTOCOL 2, 3, 5)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header

from ..protocol import errors
from ..protocol.models import CreateRequest, StoryboardRequest
from . import create, operations
from .bodies import json_body, openapi_body
from .deps import current_user, get_services, get_shaper
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


@router.post("/create", openapi_extra=openapi_body(CreateRequest))
def create_task(user: dict = Depends(current_user),
                parsed: tuple[CreateRequest, dict] = Depends(json_body(CreateRequest)),
                services: Services = Depends(get_services),
                idempotency_key: str | None = IdempotencyKey) -> dict:
    """Start a video. With ``remix_target_id`` (a draft ``gen_...`` or a post ``s_...``), remix it;
    with ``nsamples`` > 1, make that many variations in one task."""
    body, raw = parsed
    return created(services, user, create.submit(services, user, body, raw, idempotency_key))


@router.post("/bulk_create", openapi_extra=openapi_body(CreateRequest))
def bulk_create(user: dict = Depends(current_user),
                parsed: tuple[CreateRequest, dict] = Depends(json_body(CreateRequest)),
                services: Services = Depends(get_services),
                idempotency_key: str | None = IdempotencyKey) -> dict:
    """What the web page called for ``nsamples`` > 1: one task making that many variations."""
    body, raw = parsed
    return created(services, user, create.submit(services, user, body, raw, idempotency_key))


@router.post("/create/storyboard", openapi_extra=openapi_body(StoryboardRequest))
def create_storyboard(user: dict = Depends(current_user),
                      parsed: tuple[StoryboardRequest, dict] = Depends(json_body(StoryboardRequest)),
                      services: Services = Depends(get_services),
                      idempotency_key: str | None = IdempotencyKey) -> dict:
    """Several shots, each with its prompt and duration, made in order and cut together: the
    ``prompt`` in the web app's ``Shot N:`` text form, or a ``shots`` list."""
    body, raw = parsed
    row = operations.storyboard_row(services, user, body, raw)
    return created(services, user, create.insert(services, user, row, raw, idempotency_key))


@router.get("/pending/v2")
@router.get("/pending")
def pending(user: dict = Depends(current_user), services: Services = Depends(get_services),
            shaper: Shaper = Depends(get_shaper)) -> list[dict]:
    """The caller's unfinished tasks, and those finished within the configured window."""
    rows = services.store.pending(user["id"], services.settings.finished_window_seconds)
    return shaper.tasks(rows)


def _own_task(services: Services, user: dict, task_id: str) -> dict:
    row = services.store.task(task_id, user["id"])
    if row is None:
        raise errors.not_found("task")
    return row


@router.get("/tasks/{task_id}/v2")
@router.get("/tasks/{task_id}")
def task(task_id: str, user: dict = Depends(current_user), services: Services = Depends(get_services),
         shaper: Shaper = Depends(get_shaper)) -> dict:
    """One task, terminal ones included."""
    return shaper.tasks([_own_task(services, user, task_id)])[0]


@router.post("/tasks/{task_id}/cancel")
def cancel(task_id: str, user: dict = Depends(current_user), services: Services = Depends(get_services),
           shaper: Shaper = Depends(get_shaper)) -> dict:
    """sorakit's own extension: cancel a task. Queued ones stop at once, running ones within a
    second. Cancelling a finished task changes nothing and answers its current state."""
    _own_task(services, user, task_id)
    row = services.store.request_cancel(task_id, user["id"])
    return shaper.tasks([row])[0]


@router.get("/check")
def check(user: dict = Depends(current_user), services: Services = Depends(get_services)) -> dict:
    """The caller's quota: videos left in the rolling 24 hours and when the next one frees up."""
    balance = services.quota.balance(user)
    return {"rate_limit_and_credit_balance": balance.wire(),
            "concurrency_limit": services.quota.concurrency(user),
            "tasks_in_progress": services.store.count_active(user["id"])}
