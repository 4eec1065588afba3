"""``GET /metrics``: Prometheus text that moves as tasks run, read from the in-process app (worker
threads), from a real ``sorakit serve`` (worker processes, summed through their multiprocess
files) and from a ``sorakit worker --metrics-port`` of its own; refused peers get a plain 404."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from conftest import wait_for
from serverproc import ServerProcess, free_port
from sorakit.server.webhooks import WebhookSender

PENDING = "/backend/nf/pending/v2"
LOOPBACK = ("127.0.0.1", 50000)


class Scrape:
    """One /metrics answer, parsed: ``value(sample name, **labels)`` (0 when absent)."""

    def __init__(self, text: str) -> None:
        self.families = list(text_string_to_metric_families(text))
        self.samples = {(s.name, frozenset(s.labels.items())): s.value
                        for family in self.families for s in family.samples}

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def labels(self, name: str, label: str) -> set[str]:
        return {dict(key)[label] for (sample, key) in self.samples if sample == name and label in dict(key)}


def scrape_app(api, peer=LOOPBACK) -> Scrape:
    # TestClient's own peer is "testclient", which no allow list holds: a client with a real one
    response = TestClient(api.app, client=peer).get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


# -- the in-process app ----------------------------------------------------------------------
def test_queue_depth_and_statuses_while_tasks_wait(make_api):
    api = make_api(workers=0)
    for _ in range(3):
        assert api.create(n_frames=30).status_code == 200
    m = scrape_app(api)
    assert m.value("sorakit_queue_depth", model="preview") == 3
    assert m.value("sorakit_tasks", status="queued") == 3
    assert m.value("sorakit_tasks", status="succeeded") == 0  # every status is listed, 0 or not
    assert m.value("sorakit_workers_busy") == 0


def test_a_finished_task_moves_the_counters_and_the_stage_histograms(make_api):
    api = make_api(workers=1)
    before = scrape_app(api)
    task_id = api.create(n_frames=30).json()["id"]
    assert api.wait(task_id)["status"] == "succeeded"
    after = wait_for(lambda: (m := scrape_app(api)).value("sorakit_tasks_finished_total", model="preview",
                                                          outcome="succeeded") > 0 and m, what="the counter")

    def moved(name: str, **labels) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("sorakit_tasks_finished_total", model="preview", outcome="succeeded") == 1
    assert moved("sorakit_tasks", status="succeeded") == 1
    for stage in ("queued", "render", "finish", "total"):
        assert moved("sorakit_generation_seconds_count", model="preview", stage=stage) == 1, stage
        assert after.value("sorakit_generation_seconds_sum", model="preview", stage=stage) >= 0
    # the stages of one task fit in its total
    stages = sum(moved("sorakit_generation_seconds_sum", model="preview", stage=s)
                 for s in ("queued", "render", "finish"))
    assert stages <= moved("sorakit_generation_seconds_sum", model="preview", stage="total") + 0.5
    assert moved("sorakit_generation_seconds_bucket", model="preview", stage="total", le="+Inf") == 1
    assert after.value("sorakit_queue_depth", model="preview") == 0
    assert after.value("sorakit_workers_alive") >= 1


def test_a_cancelled_task_counts_as_cancelled_and_times_no_render(make_api):
    api = make_api(workers=1, preview_pace=5)
    before = scrape_app(api)
    task_id = api.create(n_frames=30).json()["id"]
    api.wait(task_id, statuses=("running",))
    assert api.client.post(f"/backend/nf/tasks/{task_id}/cancel", headers=api.alice).status_code == 200
    assert api.wait(task_id)["status"] == "cancelled"
    after = wait_for(lambda: (m := scrape_app(api)).value("sorakit_tasks_finished_total", model="preview",
                                                          outcome="cancelled") > 0 and m, what="the counter")
    assert after.value("sorakit_tasks_finished_total", model="preview", outcome="cancelled") - \
        before.value("sorakit_tasks_finished_total", model="preview", outcome="cancelled") == 1
    assert after.value("sorakit_generation_seconds_count", model="preview", stage="total") == \
        before.value("sorakit_generation_seconds_count", model="preview", stage="total")
    assert after.value("sorakit_generation_seconds_count", model="preview", stage="queued") - \
        before.value("sorakit_generation_seconds_count", model="preview", stage="queued") == 1


def test_request_latency_is_labelled_by_route_template(make_api):
    api = make_api(workers=0)
    task_id = api.create(n_frames=30).json()["id"]
    before = scrape_app(api)
    for _ in range(3):
        assert api.client.get(PENDING, headers=api.alice).status_code == 200
    api.task(task_id)
    api.client.get("/no/such/page/abc123")
    api.client.post("/backend/nf/create", content=b"x" * 10, headers={**api.alice, "content-length": "99999999",
                                                                        "content-type": "application/json"})
    after = scrape_app(api)
    count = "sorakit_http_request_duration_seconds_count"
    assert after.value(count, route=PENDING, method="GET", status="2xx") - \
        before.value(count, route=PENDING, method="GET", status="2xx") == 3
    assert after.value(count, route="/backend/nf/tasks/{task_id}/v2", method="GET", status="2xx") >= 1
    assert after.value(count, route="<unmatched>", method="GET", status="4xx") >= 1
    # refused by BodyLimits before routing, still named by the route it was meant for
    assert after.value(count, route="/backend/nf/create", method="POST", status="4xx") >= 1
    routes = after.labels(count, "route")
    assert not any(task_id in r or "abc123" in r for r in routes), routes  # never the raw URL


def test_webhook_deliveries_are_counted_by_outcome(make_api, monkeypatch):
    api = make_api(workers=0)
    sender = WebhookSender(api.services)  # not started: one delivery at a time, by hand
    answers = iter([(200, None), (500, "HTTP 500"), (None, "ConnectError: refused")])
    monkeypatch.setattr("sorakit.server.webhooks.post", lambda client, delivery: next(answers))
    before = scrape_app(api)
    for attempts in (1, 1, 99):  # the last one is past the retry schedule: given up
        sender._deliver({"id": "whd_x", "event_type": "video.completed", "event_id": "evt_x",
                         "endpoint_id": "whe_x", "attempts": attempts})
    sender.client.close()
    after = scrape_app(api)
    for outcome in ("delivered", "retrying", "given_up"):
        assert (after.value("sorakit_webhook_deliveries_total", outcome=outcome)
                - before.value("sorakit_webhook_deliveries_total", outcome=outcome)) == 1, outcome


def test_only_allowed_peers_see_it_and_others_get_a_plain_404(make_api):
    api = make_api(workers=0, metrics_allow=["10.0.0.0/8"])
    unknown = api.client.get("/no-such-url")
    for peer in (LOOPBACK, ("192.168.1.5", 1), ("testclient", 1)):
        client = TestClient(api.app, client=peer)
        for method, path in (("GET", "/metrics"), ("POST", "/metrics"), ("GET", "/metrics/")):
            refused = client.request(method, path)
            assert refused.status_code == 404, (peer, method, path)
            assert refused.json() == unknown.json()  # the same as a URL that does not exist
    assert scrape_app(api, ("10.1.2.3", 1)).value("sorakit_tasks", status="queued") == 0
    # forwarded headers are not believed: the TCP peer decides
    spoofed = TestClient(api.app, client=LOOPBACK).get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
    assert spoofed.status_code == 404
    assert TestClient(api.app, client=("::ffff:10.0.0.7", 1)).get("/metrics").status_code == 200

    closed = make_api(workers=0, metrics_allow=[])
    assert TestClient(closed.app, client=LOOPBACK).get("/metrics").status_code == 404


@pytest.mark.sqlite_only
def test_the_store_is_read_through_indexes(make_api):
    """The counts scan no table: a covering index for all statuses, searches for the rest."""
    api = make_api(workers=0)
    engine = api.services.store.engine
    seen: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        if "count(" in statement.lower():
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        scrape_app(api)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(seen) == 4, seen  # three on tasks, one on workers (alive: ix_workers_seen)
    with engine.connect() as conn:
        for statement, parameters in seen:
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
            assert all("INDEX" in step for step in plan if step.startswith(("SCAN", "SEARCH"))), (statement, plan)


def test_metrics_is_not_in_the_openapi_document(make_api):
    api = make_api(workers=0)
    paths = api.client.get("/openapi.json").json()["paths"]
    assert not any(p.startswith("/metrics") for p in paths)


# -- real processes ----------------------------------------------------------------------------
def test_serve_sums_its_worker_processes_into_its_metrics(tmp_path):
    data = tmp_path / "data"
    with ServerProcess(data, env={"SORAKIT_WORKERS": "1"}) as server:
        [folder] = (data / "metrics").iterdir()  # the children's multiprocess files go here
        task_id = server.request("POST", "/backend/nf/create", json={"prompt": "a kite", "n_frames": 30}).json()["id"]
        wait_for(lambda: server.request("GET", f"/backend/nf/tasks/{task_id}/v2").json()["status"] == "succeeded",
                 what="the task to succeed")
        assert server.request("GET", PENDING).status_code == 200

        def scrape() -> Scrape:
            response = requests.get(server.url + "/metrics", timeout=10)  # from 127.0.0.1: allowed by default
            assert response.status_code == 200, response.text
            return Scrape(response.text)

        m = wait_for(lambda: (m := scrape()).value("sorakit_generation_seconds_count", model="preview",
                                                   stage="total") == 1 and m, what="the child's histogram")
        assert m.value("sorakit_tasks_finished_total", model="preview", outcome="succeeded") == 1
        for stage in ("queued", "render", "finish"):
            assert m.value("sorakit_generation_seconds_count", model="preview", stage=stage) == 1, stage
        assert m.value("sorakit_tasks", status="succeeded") == 1
        assert m.value("sorakit_http_request_duration_seconds_count", route=PENDING, method="GET",
                       status="2xx") == 1
        assert any(f.name.startswith("process_") for f in m.families)  # the API's own
        names = [f.name for f in m.families]
        assert len(names) == len(set(names)), "a metric listed twice"
        assert list(folder.glob("*.db"))  # written by the child, not by the API
    assert not folder.exists()  # a clean stop removes them


def test_a_worker_of_its_own_serves_its_metrics_on_a_port(tmp_path, make_api):
    api = make_api(workers=0)  # the API here only queues; the worker below renders
    task_id = api.create(n_frames=30).json()["id"]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sorakit", "worker", "--data-dir", str(api.settings.data_dir),
                             "--metrics-port", str(port), "--log-level", "WARNING"])
    try:
        api.wait(task_id)

        def scrape():
            try:
                return Scrape(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            except requests.RequestException:
                return None

        m = wait_for(lambda: (m := scrape()) and m.value("sorakit_tasks_finished_total", model="preview",
                                                         outcome="succeeded") == 1 and m, what="the worker's metrics")
        assert m.value("sorakit_generation_seconds_count", model="preview", stage="total") == 1
        assert any(f.name.startswith("process_") for f in m.families)
    finally:
        proc.terminate()
        proc.wait(15)
