"""Issue 8, item 2: two server processes on one data dir never admit past a user's limits.

The quota is decided inside the transaction that inserts the task, so it holds across processes.
Both servers run with no workers, so admitted tasks stay queued and the counts are exact.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from sorakit.config import load_settings
from sorakit.server import auth
from sorakit.server.services import build_services

try:
    from serverproc import ServerProcess
except ImportError:  # pragma: no cover
    from tests.serverproc import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def two_servers(tmp_path):
    data = tmp_path / "data"
    with ServerProcess(data, args=["--workers", "0"]) as a, ServerProcess(data, args=["--workers", "0"]) as b:
        services = build_services(load_settings({"data_dir": data}, env={}))
        yield (a.url, b.url), services


def _user(services, name: str, **limits) -> dict[str, str]:
    user = services.store.create_user(name, **limits)
    token, _ = auth.issue(services.store, services.jwt_key, user["id"], 3600)
    return {"Authorization": f"Bearer {token}"}


def _race(urls, headers, n: int) -> list[requests.Response]:
    """``n`` creates released at once, alternating between the two servers."""
    gate = threading.Barrier(n)

    def one(i: int) -> requests.Response:
        gate.wait()
        return requests.post(urls[i % 2] + "/backend/nf/create", headers=headers, timeout=30,
                             json={"prompt": f"racer {i}", "n_frames": 30})

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrency_cap_holds_across_processes(two_servers):
    urls, services = two_servers
    headers = _user(services, "capped", concurrency=2, daily=100_000)
    for round_ in range(25):
        answers = _race(urls, headers, 6)
        admitted = [r.json()["id"] for r in answers if r.status_code == 200]
        refused = [r.json()["error"]["code"] for r in answers if r.status_code != 200]
        assert len(admitted) == 2, f"round {round_}: admitted {len(admitted)}"
        assert set(refused) == {"too_many_concurrent_tasks"}
        for task_id in admitted:  # free the slots for the next round
            r = requests.post(urls[0] + f"/backend/nf/tasks/{task_id}/cancel", headers=headers, timeout=10)
            assert r.json()["status"] == "cancelled"


def test_daily_limit_holds_across_processes(two_servers):
    urls, services = two_servers
    for round_ in range(10):
        headers = _user(services, f"daily{round_}", concurrency=50, daily=5)
        answers = _race(urls, headers, 8)
        admitted = sum(r.status_code == 200 for r in answers)
        assert admitted == 5, f"round {round_}: admitted {admitted}"
        assert {r.json()["error"]["code"] for r in answers if r.status_code != 200} == {"rate_limit_exhausted"}
