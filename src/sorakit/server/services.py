"""Everything a request handler or a worker needs, built once per server from its settings."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings
from ..engines import Engine, build_engines
from ..media.storage import MediaStorage, open_storage
from ..moderation import BlockList
from ..private import private_dir, private_files
from ..store import Store, store_for
from .links import LinkSigner
from .quota import Quota
from .secrets import derive, shared_master_secret


@dataclass
class Services:
    settings: Settings
    store: Store
    engines: dict[str, Engine]
    jwt_key: bytes
    signer: LinkSigner
    quota: Quota
    blocklist: BlockList
    #: where videos, thumbnails and uploads are kept (a folder, or an S3-compatible bucket)
    media: MediaStorage
    #: set when a task is queued, so an idle worker starts it at once instead of at its next poll
    work_ready: threading.Event = field(default_factory=threading.Event)
    #: set when a webhook delivery is queued, so the sender posts it at once instead of at its next poll
    webhook_ready: threading.Event = field(default_factory=threading.Event)
    #: False when the engines were built in code (tests): a worker process could not have them
    engines_from_settings: bool = True


def build_services(settings: Settings, engines: dict[str, Engine] | None = None) -> Services:
    private_dir(settings.data_dir)
    store = store_for(settings)
    if store.engine.dialect.name == "sqlite":
        db = Path(store.engine.url.database)
        private_files(db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
    master = shared_master_secret(settings, store)
    if store.engine.dialect.name != "sqlite" and not settings.media:
        logging.getLogger("sorakit.server").warning(
            "a shared database with media in this machine's data dir: workers and API nodes on other "
            "machines will not find these files; set media to a bucket (s3://...) or a shared folder")
    return Services(
        settings=settings, store=store,
        engines=engines if engines is not None else build_engines(settings),
        jwt_key=derive(master, "jwt"),
        signer=LinkSigner(derive(master, "links"), settings.link_ttl_seconds),
        quota=Quota(store, settings.default_concurrency, settings.default_daily_limit, settings.max_queue),
        blocklist=BlockList(settings.blocked_terms),
        media=open_storage(settings),
        engines_from_settings=engines is None,
    )
