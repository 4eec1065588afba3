"""``/backend/nf/*``: create, follow and cancel tasks; the quota check (PROTOCOL 2, 3, 5)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header

from ..protocol import errors
from ..protocol.models import CreateRequest
from . import create
from .bodies import json_body, openapi_body
from .deps import current_user, get_services, get_shaper
from .services import Services
from .shapes import Shaper

router = APIRouter(prefix="/backend/nf", tags=["tasks"])


@router.post("/create", openapi_extra=openapi_body(CreateRequest))
def create_task(user: dict = Depends(current_user),
                parsed: tuple[CreateRequest, dict] = Depends(json_body(CreateRequest)),
                services: Services = Depends(get_services),
                idempotency_key: str | None = Header(None, alias="Idempotency-Key", min_length=1,
                                                     max_length=255)) -> dict:
    """Start a video. Carries the union of the seed's and the live service's response keys."""
    body, raw = parsed
    task = create.submit(services, user, body, raw, idempotency_key)
    status = task["status"] if task["status"] in ("failed", "cancelled", "succeeded") else "pending"
    return {"id": task["id"], "status": status, "prompt": task["prompt"], "task_type": "video_gen",
            "priority": task["priority"],
            "rate_limit_and_credit_balance": services.quota.balance(user).wire()}


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
