"""Everything a request handler or a worker needs, built once per server from its settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..config import Settings
from ..engines import Engine, build_engines
from ..moderation import BlockList
from ..store import Store, open_store
from .links import LinkSigner
from .quota import Quota
from .secrets import derive, master_secret


@dataclass
class Services:
    settings: Settings
    store: Store
    engines: dict[str, Engine]
    jwt_key: bytes
    signer: LinkSigner
    quota: Quota
    blocklist: BlockList
    #: serialises quota check + insert, so two simultaneous creates cannot both take the last slot
    create_lock: threading.Lock = field(default_factory=threading.Lock)
    #: set when a task is queued, so an idle worker starts it at once instead of at its next poll
    work_ready: threading.Event = field(default_factory=threading.Event)


def build_services(settings: Settings, engines: dict[str, Engine] | None = None) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.db_path)
    master = master_secret(settings.data_dir)
    return Services(
        settings=settings, store=store,
        engines=engines if engines is not None else build_engines(settings),
        jwt_key=derive(master, "jwt"),
        signer=LinkSigner(derive(master, "links"), settings.link_ttl_seconds),
        quota=Quota(store, settings.default_concurrency, settings.default_daily_limit, settings.max_queue),
        blocklist=BlockList(settings.blocked_terms),
    )
