"""The real app on PostgreSQL, in-process: the whole create -> render -> list -> download path, and
a database that goes away answering 503s rather than 500s. (``TESTS_DATABASE=postgresql`` runs
every in-process API test of the suite this way; these run in every suite.)"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import av
import psycopg
import pytest

from conftest import assert_error


@pytest.fixture
def pg_api(make_api, pg_url):
    return make_api(database_url=pg_url)


def test_a_video_from_create_to_download_on_postgresql(pg_api, tmp_path):
    api = pg_api
    assert api.services.store.engine.dialect.name == "postgresql"
    r = api.create(n_frames=12)
    assert r.status_code == 200, r.text
    task = api.wait(r.json()["id"])
    assert task["status"] == "succeeded"
    (draft,) = task["generations"]
    link = urlsplit(draft["url"])
    got = api.client.get(f"{link.path}?{link.query}")
    assert got.status_code == 200
    path = tmp_path / "v.mp4"
    path.write_bytes(got.content)
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12
    listed = api.client.get("/backend/project_y/profile/drafts", headers=api.alice).json()["items"]
    assert [d["id"] for d in listed] == [draft["id"]]
    # the worker's row: registered, and credited with the task
    (worker,) = api.services.store.workers()
    assert worker["engines"] and worker["stopped_at"] is None


def test_the_secret_is_shared_through_the_database(make_api, pg_url):
    """Two API nodes with separate data dirs on one database accept each other's tokens: the
    master secret lives in the database, not in either data dir."""
    a = make_api(workers=0, database_url=pg_url)
    b = make_api(workers=0, database_url=pg_url)
    assert not (a.settings.data_dir / "secret.key").exists()
    r = b.client.get("/backend/nf/pending/v2", headers=a.alice)
    assert r.status_code == 200, r.text
    created = a.create()
    assert created.status_code == 200
    assert b.task(created.json()["id"])["status"] == "queued"


def test_a_database_gone_away_is_a_503_to_retry(make_api, postgres):
    url = postgres.new_database()
    api = make_api(workers=0, database_url=url)
    assert api.client.get("/backend/nf/pending/v2", headers=api.alice).status_code == 200
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    api.services.store.auth_cache.invalidate()
    for path in ("/backend/nf/pending/v2", "/backend/project_y/profile/drafts"):
        r = api.client.get(path, headers=api.alice)
        body = assert_error(r, 503, "database_unavailable", param=None)
        assert r.headers["Retry-After"] == "5" and "database" in body["message"]
    r = api.create()
    assert_error(r, 503, "database_unavailable", param=None)


def test_values_postgresql_refuses_are_the_requests_mistake(pg_api):
    """A NUL character (PostgreSQL cannot store one in text) is a 400 naming the field; in a path it
    is a 4xx too, never a 500; seeds up to 2**63 and 200-character style ids fit their columns."""
    api = pg_api
    r = api.create(prompt="a kite\x00 over the sea")
    assert_error(r, 400, "invalid_request", param="prompt")
    for path in ("/backend/nf/tasks/task_%00/v2", "/v1/videos/video_%00", "/p/s_%00",
                 "/backend/project_y/profile/drafts/gen_%00"):
        r = api.client.get(path, headers=api.alice)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    r = api.create(seed=2**62, n_frames=3)
    assert r.status_code == 200, r.text
    assert api.wait(r.json()["id"])["status"] == "succeeded"
    assert api.services.store.task(r.json()["id"])["seed"] == 2**62
    r = api.create(style_id="s" * 150, n_frames=3)
    assert r.status_code in (200, 400), r.text  # stored, or refused by name: never a 500


def test_an_idle_worker_is_woken_by_the_database(make_api, pg_url, monkeypatch):
    """A worker in one process, a create in another (API node): with the idle poll set to a
    minute, only PostgreSQL's NOTIFY (sent by the create's commit) can make it start at once."""
    from sorakit.worker import worker as worker_module

    monkeypatch.setattr(worker_module, "LISTENING_POLL", 60.0)
    renderer = make_api(workers=1, database_url=pg_url)
    node = make_api(workers=0, database_url=pg_url)  # its own services: its creates wake none here
    listener = renderer.app.state.pool.listener
    assert listener is not None and listener.listening.wait(10)
    time.sleep(0.5)  # the worker has polled the empty queue and sleeps on its minute
    task = node.wait(node.create(n_frames=3).json()["id"], timeout=20)
    assert task["status"] == "succeeded"
