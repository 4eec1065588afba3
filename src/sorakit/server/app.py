"""The FastAPI app factory. Workers run in-process, started and stopped with the app's lifespan."""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from .. import __version__
from ..config import Settings
from ..engines import Engine
from . import (handlers, openapi, routes_assets, routes_auth, routes_drafts, routes_misc, routes_models,
               routes_nf, routes_posts, routes_profile, routes_uploads, routes_v1, routes_web)
from .create import admit
from .limits import BodyLimits
from .maintenance import Maintenance
from .metrics import Metrics, RequestTimer
from .metrics import router as metrics_router
from .services import Services, build_services
from .webhooks import WebhookSender

log = logging.getLogger("sorakit.server")

#: threads that run sync routes at once (anyio's default limiter, 40 unless set): more only fight
#: over the GIL (issue 13). The hot routes have their own smaller pool (deps.HOT_THREADS); this one
#: keeps room for slow ones (a prompt enhancer, uploads). SORAKIT_API_THREADS overrides it.
API_THREADS = 8


def api_threads() -> int:
    return max(int(os.environ.get("SORAKIT_API_THREADS") or API_THREADS), 1)


def _recover(services: Services) -> None:
    """Finish admitting tasks a crash caught between insert and moderation."""
    for task_id in services.store.preprocessing_ids():
        admit(services, services.store.task(task_id))


def create_app(settings: Settings, *, engines: dict[str, Engine] | None = None,
               services: Services | None = None, workers: int | None = None) -> FastAPI:
    services = services or build_services(settings, engines)
    count = settings.workers if workers is None else workers
    # engines built in code cannot be handed to another process: their workers run here
    mode = settings.worker_mode if services.engines_from_settings else "thread"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from ..worker import WorkerPool

        anyio.to_thread.current_default_thread_limiter().total_tokens = api_threads()
        _recover(services)
        if mode == "process" and count:
            from ..worker.processes import WorkerProcesses

            pool = WorkerProcesses(settings, count)
        else:
            pool = WorkerPool(services, count)
        app.state.pool = pool
        pool.start()
        housekeeping = Maintenance(services)
        housekeeping.start()  # its first pass sweeps what a crash left behind
        webhooks = WebhookSender(services)
        webhooks.start()  # sends what was queued before a restart, too
        try:
            yield
        finally:
            webhooks.stop()
            housekeeping.stop()
            pool.stop()

    app = FastAPI(title="sorakit", version=__version__, lifespan=lifespan,
                  description="A self-hosted server for the Sora web video API.")
    app.state.services = services
    app.state.metrics = Metrics(services)
    handlers.install(app)
    openapi.install(app)
    app.add_middleware(BodyLimits, services=services)
    app.add_middleware(RequestTimer)  # outermost: it times BodyLimits' refusals too
    app.include_router(metrics_router)  # GET /metrics, for settings.metrics_allow only
    # routes_web last: a catch-all page route there must not shadow /p/{id} or the API
    for module in (routes_nf, routes_drafts, routes_assets, routes_uploads, routes_misc, routes_auth,
                   routes_models, routes_posts, routes_profile, routes_v1, routes_web):
        app.include_router(module.router)
    return app


def uvicorn_options(settings: Settings) -> dict:
    """How every sorakit server runs uvicorn: our log filters, and uvicorn's own forwarded-header
    handling off. It would believe 127.0.0.1 by default, and with it on, the peer a request
    shows is the end user rather than the proxy, so links.link_base could no longer tell whether
    to believe X-Forwarded-Host: trusted_proxies are judged there, in one place."""
    from .logs import uvicorn_log_config

    return {"log_config": uvicorn_log_config(), "proxy_headers": False, "server_header": False}
