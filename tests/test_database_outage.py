"""A database that fails for a moment while a worker renders: the task is not failed for it.

Progress writes are a view (skipped, caught up by the next); the final commit of a rendered video
is retried while the lease lasts; a database error anywhere else hands the task back instead of
recording the database's failure as the task's. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import OperationalError


def _flaky(store, name: str, failures: int):
    """Make ``store.<name>`` raise OperationalError its first ``failures`` calls."""
    real = getattr(store, name)
    left = {"n": failures}
    lock = threading.Lock()

    def flaky(*args, **kwargs):
        with lock:
            if left["n"] > 0:
                left["n"] -= 1
                raise OperationalError("UPDATE tasks ...", {}, Exception("server closed the connection unexpectedly"))
        return real(*args, **kwargs)

    setattr(store, name, flaky)
    return left


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_failed_progress_write_does_not_fail_the_task(make_api, backend, request):
    settings = {"database_url": request.getfixturevalue("pg_url")} if backend == "postgresql" else {}
    api = make_api(preview_pace=1.0, **settings)
    left = _flaky(api.services.store, "set_progress", 2)
    task = api.wait(api.create(n_frames=30).json()["id"])
    assert task["status"] == "succeeded" and left["n"] == 0
    assert len(task["generations"]) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_commit_of_a_rendered_video_is_retried(make_api, backend, request):
    settings = {"database_url": request.getfixturevalue("pg_url")} if backend == "postgresql" else {}
    api = make_api(**settings)
    left = _flaky(api.services.store, "finish", 2)
    task = api.wait(api.create(n_frames=6).json()["id"])
    assert task["status"] == "succeeded" and left["n"] == 0
    row = api.services.store.task(task["id"])
    assert row["attempts"] == 1 and row["failure_reason"] is None
    assert len(api.services.store.generations_for([task["id"]])[task["id"]]) == 1


def test_a_database_error_elsewhere_hands_the_task_back(make_api, monkeypatch):
    """A database error while the run prepares its job is the database's, not the task's: the
    attempt is released uncounted, and the next one makes the video."""
    from sorakit.worker import worker as worker_module

    api = make_api()
    real_job = worker_module.Run._job
    calls = {"n": 0}

    def failing_once(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("SELECT ...", {}, Exception("terminating connection due to administrator command"))
        return real_job(self, **kwargs)

    monkeypatch.setattr(worker_module.Run, "_job", failing_once)
    task = api.wait(api.create(n_frames=6).json()["id"])
    assert calls["n"] >= 2 and task["status"] == "succeeded"
    row = api.services.store.task(task["id"])
    assert row["attempts"] == 1  # the released attempt did not count
    assert row["failure_reason"] is None
