"""The FastAPI app factory. Workers run in-process, started and stopped with the app's lifespan."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..config import Settings
from ..engines import Engine
from . import handlers, routes_assets, routes_drafts, routes_misc, routes_nf, routes_uploads
from .create import admit
from .services import Services, build_services

log = logging.getLogger("sorakit.server")


def _recover(services: Services) -> None:
    """Finish admitting tasks a crash caught between insert and moderation."""
    from ..worker import sweep_media

    for task_id in services.store.preprocessing_ids():
        admit(services, services.store.task(task_id))
    sweep_media(services)


def create_app(settings: Settings, *, engines: dict[str, Engine] | None = None,
               services: Services | None = None, workers: int | None = None) -> FastAPI:
    services = services or build_services(settings, engines)
    count = settings.workers if workers is None else workers

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from ..worker import WorkerPool

        _recover(services)
        pool = WorkerPool(services, count)
        app.state.pool = pool
        pool.start()
        try:
            yield
        finally:
            pool.stop()

    app = FastAPI(title="sorakit", version=__version__, lifespan=lifespan,
                  description="A self-hosted server for the Sora web video API.")
    app.state.services = services
    handlers.install(app)
    for module in (routes_nf, routes_drafts, routes_assets, routes_uploads, routes_misc):
        app.include_router(module.router)
    return app
