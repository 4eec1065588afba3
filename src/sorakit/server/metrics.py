"""``GET /metrics``: Prometheus metrics of the API, the store and the workers, in the text format.

Only peers in ``settings.metrics_allow`` (IPs or CIDRs, judged on the TCP peer, never on a
forwarded header) get an answer; anyone else gets the 404 of an unknown URL, so the route does not
show. It asks for no token and is not in the OpenAPI document.

What it lists:

- from prometheus_client's default registry (this process): ``process_*`` and ``python_*``, and
    - ``sorakit_http_request_duration_seconds{route, method, status}`` histogram: every HTTP
      request until its answer was sent, by the matched route's template (``/backend/nf/tasks/
      {task_id}/v2``, never the URL itself), method and status class (``2xx`` ...; ``route`` is
      ``<unmatched>`` for a URL no route has)
    - ``sorakit_webhook_deliveries_total{outcome}`` counter: webhook attempts, ``delivered``,
      ``retrying`` (failed, tried again later) or ``given_up`` (failed, schedule spent)
- read from the store at each scrape (``StoreCollector``; so every API node shows the same):
    - ``sorakit_tasks{status}`` gauge: tasks in each status (all kept tasks)
    - ``sorakit_queue_depth{model}`` gauge: queued tasks per engine
    - ``sorakit_workers_busy`` gauge: workers holding a current lease on a running task
    - ``sorakit_workers_alive`` gauge: workers seen in the last 30 s (once the store keeps a
      ``workers`` table)
- the workers' ``sorakit_generation_seconds``, ``sorakit_tasks_finished_total`` and
  ``sorakit_task_attempts_abandoned_total`` (see ``worker/metrics.py``): those of this process's
  worker threads, or with worker processes, the sum over the children of this server.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Iterable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import iter_route_contexts
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, exposition, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import distinct, func, select
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..protocol.errors import ApiError
from ..store import ACTIVE, FLEET_ALIVE, TERMINAL
from ..store.schema import tasks
from .services import Services

log = logging.getLogger("sorakit.server")
#: a worker that wrote no heartbeat in this long is not counted alive
ALIVE_SECONDS = FLEET_ALIVE  # a worker not seen for this long is lost (store.FLEET_ALIVE)
UNMATCHED = "<unmatched>"
#: the text format every Prometheus reads (newer clients' "latest" says version=1.0.0, for UTF-8
#: names, which ours are not)
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_SECONDS = Histogram(
    "sorakit_http_request_duration_seconds",
    "Seconds from a request's arrival until its answer was sent, by route template, method and "
    "status class.", ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
             float("inf")))
WEBHOOK_DELIVERIES = Counter(
    "sorakit_webhook_deliveries", "Webhook delivery attempts by outcome: delivered, retrying "
    "(failed; tried again later), given_up (failed; no tries left).", ["outcome"])


# -- HTTP latency ------------------------------------------------------------------------------
class RequestTimer:
    """A pure ASGI middleware that times each HTTP request into ``HTTP_SECONDS``.

    The route template is the one the router matched (``scope["route"]``, set on the scope it
    shares with us). A request answered before routing (a body refused by ``BodyLimits``) is
    matched here, after the answer; a 404 is not looked up again."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        #: (route, method, status class) -> its histogram child: no label lookup per request
        self._children: dict[tuple[str, str, str], object] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what an exception that escapes the app turns into

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self._observe(scope, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None)
        if template is None:
            template = UNMATCHED if status == 404 else _match(scope)
        method = scope["method"] if scope["method"] in METHODS else "other"
        key = (template, method, f"{status // 100}xx")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = HTTP_SECONDS.labels(*key)
        child.observe(seconds)


def _match(scope: Scope) -> str:
    """The template of the route a request was meant for, when the router never saw it (the
    first full match, as the router takes it; else the first with the path but not the method)."""
    partial = None
    for route in iter_route_contexts(getattr(scope.get("app"), "routes", ())):
        try:
            match = route.matches(scope)[0]
        except Exception:  # a route that cannot judge this scope is not it
            continue
        if match is Match.FULL and route.path:
            return route.path
        if match is Match.PARTIAL and partial is None:
            partial = route.path
    return partial or UNMATCHED


# -- the store, read at scrape time ------------------------------------------------------------
class StoreCollector:
    """Task counts and workers, read from the store at each scrape: three queries in one read
    transaction, each on an index that leads with status (all statuses: a scan of that index
    alone; the queued and running ones: a search), and the ``workers`` table."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def describe(self) -> Iterable:
        return []  # registering must not query the database

    def collect(self) -> Iterable:
        store = self.services.store
        now = store.clock()
        try:
            with store.engine.connect().execution_options(readonly=True) as conn, conn.begin():
                by_status = dict(conn.execute(select(tasks.c.status, func.count())
                                              .group_by(tasks.c.status)).all())
                queued = dict(conn.execute(select(tasks.c.engine, func.count())
                                           .where(tasks.c.status == "queued").group_by(tasks.c.engine)).all())
                busy = conn.execute(select(func.count(distinct(tasks.c.lease_owner))).where(
                    tasks.c.status.in_(("running", "processing")), tasks.c.lease_expires > now)).scalar()
        except Exception:  # a scrape shows what it can; the log says why the rest is missing
            log.exception("metrics: could not read the task counts")
            return
        status = GaugeMetricFamily("sorakit_tasks", "Tasks in each status.", labels=["status"])
        for name in dict.fromkeys((*ACTIVE, *TERMINAL, *by_status)):
            status.add_metric([name], by_status.get(name, 0))
        yield status
        depth = GaugeMetricFamily("sorakit_queue_depth", "Queued tasks per model (engine).", labels=["model"])
        for name in dict.fromkeys((*self.services.engines, *queued)):
            depth.add_metric([name], queued.get(name, 0))
        yield depth
        yield GaugeMetricFamily("sorakit_workers_busy", "Workers holding a current lease on a running task.",
                                value=busy or 0)
        alive = self._alive(now)
        if alive is not None:
            yield GaugeMetricFamily("sorakit_workers_alive",
                                    f"Workers seen in the last {ALIVE_SECONDS:.0f} seconds.", value=alive)

    def _alive(self, now: float) -> int | None:
        """Workers not stopped whose heartbeat is recent (as ``sorakit workers`` counts them)."""
        try:
            return self.services.store.count_alive_workers(now - ALIVE_SECONDS)
        except Exception:
            log.exception("metrics: could not read the workers")
            return None


# -- who may read it ---------------------------------------------------------------------------
def networks(allow: Iterable[str]) -> list:
    found = []
    for entry in allow:
        try:
            found.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            log.error("metrics_allow: %r is not an IP address or CIDR; ignored", entry)
    return found


def allowed(peer: str | None, nets: list) -> bool:
    if not peer or not nets:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:  # a dual-stack socket's IPv4 peer
        address = address.ipv4_mapped
    return any(address in net for net in nets)


class Metrics:
    """One app's metrics: its allow list, its store collector, and where its workers' values are."""

    def __init__(self, services: Services) -> None:
        self.nets = networks(services.settings.metrics_allow)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(services))

    def render(self, pool: object | None) -> bytes:
        parts = [generate_latest(REGISTRY), generate_latest(self.registry)]
        folder = getattr(pool, "metrics_dir", None)  # worker processes (processes.WorkerProcesses)
        if folder is not None and os.path.isdir(folder):  # (gone once the pool stopped)
            from prometheus_client.multiprocess import MultiProcessCollector

            children = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(children, path=str(folder))
            parts.append(generate_latest(children))
        else:  # worker threads in this process (or none)
            from ..worker.metrics import REGISTRY as WORKERS

            parts.append(generate_latest(WORKERS))
        return b"".join(parts)


router = APIRouter(include_in_schema=False)


# Every method, and the path with a slash too: a refused peer gets the same 404 as for any unknown
# URL, not a 405 or a redirect that would show the route is there.
@router.api_route("/metrics", methods=sorted(METHODS))
@router.api_route("/metrics/", methods=sorted(METHODS))
def metrics(request: Request) -> Response:
    state = request.app.state
    peer = request.client.host if request.client else None
    if not allowed(peer, state.metrics.nets):
        raise HTTPException(404)
    if request.method not in ("GET", "HEAD"):
        raise ApiError(405, "method_not_allowed", "This method is not allowed on this URL.",
                       headers={"Allow": "GET, HEAD"})
    return Response(state.metrics.render(getattr(state, "pool", None)), media_type=CONTENT_TYPE)
