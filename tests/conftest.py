"""Shared fixtures: every test gets its own data dir; ``make_api`` runs the real app in-process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sorakit.config import load_settings
from sorakit.server import auth
from sorakit.server.app import create_app
from sorakit.server.services import build_services

DOCUMENTED_TASK_KEYS = {
    "id", "status", "progress_pct", "progress_pos_in_queue", "estimated_queue_wait_time",
    "queue_status_message", "created_at", "task_type", "type", "prompt", "title", "model", "n_frames",
    "width", "height", "inpaint_items", "generations", "failure_reason", "priority",
}
DOCUMENTED_DRAFT_KEYS = {
    "id", "generation_id", "task_id", "kind", "url", "downloadable_url", "encodings", "width", "height",
    "prompt", "title", "tags", "created_at", "storyboard_id", "draft_reviewed", "generation_type",
    "creation_config", "video_url", "download_url",
}
ENCODING_KEYS = {"source", "source_wm", "md", "gif", "thumbnail", "unfurl"}
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the developer's settings or data: a private default data dir for each."""
    for key in list(os.environ):
        if key.startswith("SORAKIT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SORAKIT_DATA_DIR", str(tmp_path / "default-data"))


class Api:
    """The real app over TestClient (lifespan included, so workers run), with two users."""

    def __init__(self, data_dir: Path, workers: int, engines=None, **settings) -> None:
        # workers as threads of this process: tests look at engines and workers in-process (the
        # process mode has its own tests, and every real-server test runs it)
        self.settings = load_settings({"data_dir": data_dir, "workers": workers, "worker_mode": "thread",
                                       **settings})
        self.services = build_services(self.settings, engines)
        self.app = create_app(self.settings, services=self.services)
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self.client.__enter__()
        self.alice = self.headers_for("alice")
        self.bob = self.headers_for("bob")

    def headers_for(self, name: str, **limits) -> dict[str, str]:
        store = self.services.store
        user = store.user_by_name(name) or store.create_user(name, **limits)
        token, _ = auth.issue(store, self.services.jwt_key, user["id"], 3600)
        return {"Authorization": f"Bearer {token}"}

    def create(self, headers=None, **body):
        body.setdefault("prompt", "a red kite over a grey sea")
        return self.client.post("/backend/nf/create", json=body, headers=headers or self.alice)

    def task(self, task_id: str, headers=None) -> dict:
        r = self.client.get(f"/backend/nf/tasks/{task_id}/v2", headers=headers or self.alice)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, task_id: str, statuses=("succeeded", "failed", "cancelled"), headers=None,
             timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id, headers)
            if task["status"] in statuses:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task stuck in {task['status']}: {task}")
            time.sleep(0.05)

    def close(self) -> None:
        self.client.__exit__(None, None, None)


#: ``TESTS_DATABASE=postgresql`` runs every in-process API of the suite on a fresh PostgreSQL
#: database instead of SQLite (the store tests run on both always; this is the whole-suite check)
ON_POSTGRES = os.environ.get("TESTS_DATABASE") == "postgresql"


def pytest_collection_modifyitems(config, items):
    if ON_POSTGRES:  # what only SQLite has (its file, WAL, query plans) is not there to test
        skip = pytest.mark.skip(reason="about SQLite itself (TESTS_DATABASE=postgresql)")
        for item in items:
            if item.get_closest_marker("sqlite_only"):
                item.add_marker(skip)


@pytest.fixture
def make_api(tmp_path, request):
    made: list[Api] = []

    def factory(workers: int = 1, engines=None, **settings) -> Api:
        if ON_POSTGRES and "database_url" not in settings:
            settings["database_url"] = request.getfixturevalue("postgres").new_database()
            # the CLI commands a test runs on this data dir find the same database
            data = tmp_path / f"data{len(made)}"
            data.mkdir(parents=True, exist_ok=True)
            (data / "config.toml").write_text(f'database_url = "{settings["database_url"]}"\n')
        api = Api(tmp_path / f"data{len(made)}", workers, engines, **settings)
        made.append(api)
        return api

    yield factory
    for api in made:
        api.close()
        if ON_POSTGRES:
            api.services.store.engine.dispose()


@pytest.fixture
def api(make_api) -> Api:
    return make_api()


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL cluster for the whole run (tests/pg.py); skips where none can start."""
    from pg import start_or_skip

    cluster = start_or_skip()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return postgres.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    """Each store test runs on both backends: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return request.getfixturevalue("pg_url")


def wait_for(predicate, timeout: float = 30.0, what: str = "condition", every: float = 0.1):
    """Call ``predicate`` until it returns something truthy (returned), for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return found


def assert_error(response, status: int, code: str, param: str | None = "__any__") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) >= ERROR_KEYS, body
    assert body["error"]["code"] == code, body
    if param != "__any__":
        assert body["error"]["param"] == param, body
    return body["error"]
