"""Issue 8, items 6, 8 and 10: what an operator sees of a long-running server.

Housekeeping (temp leftovers, retention, uploads), private files, links kept out of the access
log, the host that minted links name, and a clean log for clients that send ``Upgrade: h2c``.
"""

from __future__ import annotations

import os
import socket
import stat
import time

import pytest
import requests
from starlette.requests import Request

from sorakit.server.links import link_base
from sorakit.server.maintenance import ORPHAN_GRACE, TMP_GRACE, run_once

try:
    from serverproc import ServerProcess
except ImportError:  # pragma: no cover
    from tests.serverproc import ServerProcess

DAY = 86400.0


def _age(path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def _finished(api, **body) -> dict:
    r = api.create(n_frames=10, **body)
    assert r.status_code == 200, r.text
    return api.wait(r.json()["id"])


# -- temp leftovers ----------------------------------------------------------------------------
def test_leftover_temp_dirs_go_unless_a_worker_holds_their_task(make_api):
    api = make_api(workers=0)
    tmp = api.settings.media_dir / "tmp"
    held_id = api.create(n_frames=10).json()["id"]
    claim = api.services.store.claim("test-worker", 300, 3)
    assert claim.task["id"] == held_id
    dead = tmp / "task_dead.0123abcd"
    live = tmp / f"{held_id}.89abcdef"
    fresh = tmp / "task_justnow.00000000"
    for path in (dead, live, fresh):
        path.mkdir(parents=True)
        (path / "video.mp4").write_bytes(b"half a video")
    for path in (dead, live):
        _age(path, TMP_GRACE + 5)  # minutes, not the hour it used to take
    done = run_once(api.services)
    assert done.temp_dirs == 1
    assert not dead.exists() and live.exists() and fresh.exists()


def test_draft_dirs_with_no_draft_go_after_a_grace(make_api):
    api = make_api()
    task = _finished(api)
    kept = api.settings.media_dir / task["generations"][0]["id"]
    orphan = api.settings.media_dir / "gen_orphan"
    young = api.settings.media_dir / "gen_young"
    for path in (orphan, young):
        path.mkdir()
    _age(orphan, ORPHAN_GRACE + 5)
    _age(kept, ORPHAN_GRACE + 5)
    assert run_once(api.services).orphan_dirs == 1
    assert kept.is_dir() and young.is_dir() and not orphan.exists()


def test_the_sweep_runs_periodically_while_serving(make_api):
    api = make_api(maintenance_interval_seconds=0.2)
    leftover = api.settings.media_dir / "tmp" / "task_crashed.deadbeef"
    leftover.mkdir(parents=True)
    _age(leftover, TMP_GRACE + 5)
    deadline = time.monotonic() + 10
    while leftover.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not leftover.exists()


# -- retention ---------------------------------------------------------------------------------
def test_old_finished_tasks_without_drafts_and_old_keys_are_pruned(make_api):
    api = make_api(task_retention_seconds=2 * DAY)
    store = api.services.store
    with_draft = _finished(api)
    r = api.client.post("/backend/nf/create", json={"prompt": "soon cancelled"},
                        headers={**api.alice, "Idempotency-Key": "k-1"})
    cancelled = r.json()["id"]
    api.client.post(f"/backend/nf/tasks/{cancelled}/cancel", headers=api.alice)
    api.wait(cancelled)
    real = store.clock
    store.clock = lambda: real() + DAY + 60  # keys expire after a day, tasks after two
    assert run_once(api.services).idempotency_keys == 1
    assert store.task(cancelled) is not None
    store.clock = lambda: real() + 3 * DAY
    done = run_once(api.services)
    assert done.tasks == 1 and store.task(cancelled) is None
    assert store.task(with_draft["id"]) is not None  # its draft still needs it
    store.clock = real
    assert api.client.get(f"/backend/nf/tasks/{with_draft['id']}/v2", headers=api.alice).status_code == 200


def test_retention_shorter_than_the_daily_window_is_refused(make_api):
    from sorakit.config import ConfigError

    with pytest.raises(ConfigError, match="task_retention_seconds"):
        make_api(task_retention_seconds=3600)


@pytest.mark.sqlite_only
def test_the_wal_has_a_size_limit(api):
    with api.services.store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_size_limit").scalar() == 64 * 1024 * 1024


# -- private files -----------------------------------------------------------------------------
def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.sqlite_only
def test_data_files_are_private(make_api, tmp_path):
    data = tmp_path / "data0"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)  # an existing, world-readable data dir is tightened
    api = make_api()
    task = _finished(api)
    gen_dir = api.settings.media_dir / task["generations"][0]["id"]
    assert api.settings.data_dir == data
    for folder in (data, api.settings.media_dir, gen_dir):
        assert _mode(folder) == 0o700, folder
    for path in (api.settings.db_path, gen_dir / "video.mp4", gen_dir / "thumbnail.webp"):
        assert _mode(path) == 0o600, path


# -- the host of minted links ------------------------------------------------------------------
def _request(headers: dict[str, str], client=("203.0.113.9", 5000), server=("10.1.2.3", 8000)) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw, "scheme": "http",
                    "client": client, "server": server, "query_string": b""})


def test_public_base_url_decides_links_whatever_the_host_header(make_api):
    api = make_api(public_base_url="https://videos.example.org/")
    task = _finished(api)
    r = api.client.get(f"/backend/nf/tasks/{task['id']}/v2", headers={**api.alice, "Host": "evil.example"})
    assert r.json()["generations"][0]["url"].startswith("https://videos.example.org/assets/")


def test_forwarded_headers_count_only_from_trusted_proxies():
    headers = {"host": "10.1.2.3:8000", "x-forwarded-host": "videos.example.org",
               "x-forwarded-proto": "https"}
    assert link_base(_request(headers), None, []) == "http://10.1.2.3:8000"
    assert link_base(_request(headers), None, ["198.51.100.0/24"]) == "http://10.1.2.3:8000"
    assert link_base(_request(headers), None, ["203.0.113.0/24"]) == "https://videos.example.org"
    assert link_base(_request(headers), "https://fixed.example", ["203.0.113.9"]) == "https://fixed.example"


@pytest.mark.parametrize("host", ["evil.example/x?", "a b", "user@evil.example", ""])
def test_a_malformed_host_header_names_the_server_instead(host):
    assert link_base(_request({"host": host}), None, []) == "http://10.1.2.3:8000"


# -- the access log: no signatures, no upgrade noise -------------------------------------------
def _h2c_get(port: int, path: str, token: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                      f"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
                      f"Authorization: Bearer {token}\r\n\r\n").encode())
        return sock.recv(65536)


@pytest.mark.slow
def test_access_log_has_paths_but_no_signatures_and_no_upgrade_noise(tmp_path):
    with ServerProcess(tmp_path / "data") as server:
        task_id = server.request("POST", "/backend/nf/create", json={"prompt": "logged", "n_frames": 10}).json()["id"]
        deadline = time.monotonic() + 30
        while (task := server.request("GET", f"/backend/nf/tasks/{task_id}/v2").json())["status"] != "succeeded":
            assert time.monotonic() < deadline, task
            time.sleep(0.1)
        url = task["generations"][0]["url"]
        assert "sig=" in url
        assert requests.get(url, timeout=10).status_code == 200
        assert requests.get(url.replace("sig=", "sig=x"), timeout=10).status_code == 403
        answer = _h2c_get(server.port, "/backend/nf/pending/v2", server.token)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
        log = server.log_text()
    assert "/assets/" in log and "GET /backend/nf/pending/v2" in log
    assert "sig=" not in log and "se=" not in log
    assert "Unsupported upgrade" not in log and "WebSocket" not in log


@pytest.mark.slow
def test_links_behind_a_trusted_proxy_on_a_real_server(tmp_path):
    forwarded = {"X-Forwarded-Host": "videos.example.org", "X-Forwarded-Proto": "https",
                 "X-Forwarded-For": "198.51.100.7"}
    for proxies, expected in (("127.0.0.1", "https://videos.example.org/assets/"), ("", "http://127.0.0.1:")):
        with ServerProcess(tmp_path / f"data{bool(proxies)}", env={"SORAKIT_TRUSTED_PROXIES": proxies}) as server:
            task_id = server.request("POST", "/backend/nf/create", json={"prompt": "p", "n_frames": 5}).json()["id"]
            deadline = time.monotonic() + 30
            while (task := server.request("GET", f"/backend/nf/tasks/{task_id}/v2",
                                          headers=forwarded).json())["status"] != "succeeded":
                assert time.monotonic() < deadline, task
                time.sleep(0.1)
            assert task["generations"][0]["url"].startswith(expected), task["generations"][0]["url"]
