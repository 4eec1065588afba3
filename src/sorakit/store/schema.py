"""Table definitions of the current schema (SQLAlchemy Core, portable to PostgreSQL).

Times are epoch seconds (floats). JSON columns hold the request's own keys, unknown ones included.
"""

from __future__ import annotations

from sqlalchemy import (JSON, BigInteger, Boolean, Column, Float, ForeignKey, Index, Integer, MetaData,
                        String, Table, Text)

metadata = MetaData()

users = Table(
    "users", metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("concurrency_limit", Integer),
    Column("daily_limit", Integer),
    # added by 0006: NULL on older rows (no password: no web sign-in; not disabled)
    Column("password_hash", String(200)),  # scrypt$n$r$p$salt$hash (server/sessions.py)
    Column("disabled_at", Float),
    Column("email", String(320)),
)

tokens = Table(
    "tokens", metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("revoked_at", Float),
)

tasks = Table(
    "tasks", metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("prompt", Text, nullable=False),
    Column("title", Text),
    Column("model", String(100), nullable=False),
    Column("engine", String(100), nullable=False),
    Column("orientation", String(20), nullable=False),
    Column("size", String(20), nullable=False),
    Column("n_frames", Integer, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("fps", Integer, nullable=False),
    Column("seed", BigInteger),  # 0 <= seed < 2**63 (0010 widened it: PostgreSQL's integer is 32-bit)
    Column("style_id", String(200)),  # the request allows 200 (0010)
    Column("inpaint_items", JSON, nullable=False),
    Column("request", JSON, nullable=False),
    Column("priority", Integer, nullable=False, default=1),
    Column("progress", Float),
    Column("failure_reason", Text),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("lease_owner", String(200)),
    Column("lease_expires", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # added by 0007 (NULL on older rows): what the task does and from what (server/operations.py)
    Column("operation", String(20)),  # generate (NULL) | remix | extend | storyboard
    Column("inputs", JSON),  # the operation's inputs: source generation, shots, strength, ...
    Column("n_variants", Integer),  # videos this task makes (NULL: 1); the quota counts each
    # 0008 (replacing ix_tasks_claim): claims take the head of the queue in this index's order, never
    # sorting it; queue positions and the global queue count read the index alone.
    Index("ix_tasks_queue", "status", "priority", "created_at", "id"),
    Index("ix_tasks_user_created", "user_id", "created_at"),
    Index("ix_tasks_user_status", "user_id", "status"),
    Index("ix_tasks_user_finished", "user_id", "finished_at"),
    Index("ix_tasks_status_finished", "status", "finished_at"),
)

generations = Table(
    "generations", metadata,
    Column("id", String(40), primary_key=True),
    Column("task_id", String(40), ForeignKey("tasks.id"), nullable=False),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("width", Integer),
    Column("height", Integer),
    Column("n_frames", Integer),
    Column("video_file", String(300)),
    Column("thumbnail_file", String(300)),
    Column("spritesheet_file", String(300)),  # added by 0004: NULL on older drafts and on errors
    Column("video_bytes", BigInteger),
    Column("reason_str", Text),
    Column("error_reason", Text),
    Column("meta", JSON, nullable=False),
    Index("ix_generations_user_created", "user_id", "created_at", "id"),
    Index("ix_generations_task", "task_id"),
)

idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("user_id", String(40), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("task_id", String(40), nullable=False),
    Column("created_at", Float, nullable=False),
)

uploads = Table(
    "uploads", metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("file_name", String(300)),
    Column("file", String(300), nullable=False),
    Column("mime", String(50), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
)

schema_migrations = Table(
    "schema_migrations", metadata,
    Column("name", String(200), primary_key=True),
    Column("applied_at", Float, nullable=False),
)

webhook_endpoints = Table(
    "webhook_endpoints", metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("secret", String(100), nullable=False),  # whsec_...: kept as given, it signs every send
    Column("events", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_webhook_endpoints_user", "user_id"),
)

# One row per event and endpoint. ``next_attempt_at`` doubles as the lease: a claim pushes it past
# the send's timeout, so a sender that died mid-send is retried once it passes. No foreign key to
# tasks: retention may prune a task while its event is still being retried.
webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", String(40), primary_key=True),
    Column("event_id", String(40), nullable=False),
    Column("endpoint_id", String(40), ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("task_id", String(40), nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("payload", Text, nullable=False),  # the exact body: every retry sends the same bytes
    Column("status", String(20), nullable=False),  # pending | delivered | failed
    Column("created_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(200)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("delivered_at", Float),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "status"),
)

# Posts (0007): a draft shared under a public permalink until deleted. ``deleted_at`` keeps the row
# (a remix made from a post still names it) while the page and the video stop being served.
posts = Table(
    "posts", metadata,
    Column("id", String(40), primary_key=True),  # s_<32 hex>
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False),
    Column("generation_id", String(40), ForeignKey("generations.id"), nullable=False),
    Column("post_text", Text),
    Column("created_at", Float, nullable=False),
    Column("deleted_at", Float),
    Index("ix_posts_user", "user_id", "created_at"),
    Index("ix_posts_generation", "generation_id"),
)

# Web sign-in sessions (0006). The cookie holds a random value; only its SHA-256 is kept, so the
# table alone signs nobody in. ``access_token_id`` is the bearer token minted for the session,
# revoked with it.
sessions = Table(
    "sessions", metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("access_token_id", String(40), ForeignKey("tokens.id")),
    Index("ix_sessions_token_hash", "token_hash", unique=True),
    Index("ix_sessions_user", "user_id"),
)

# Failed sign-ins per key ("user:NAME", "ip:ADDR"), in the database so that slowing down holds
# across processes and restarts.
signin_failures = Table(
    "signin_failures", metadata,
    Column("key", String(300), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("first_at", Float, nullable=False),
    Column("locked_until", Float),
)

# The fleet (0009): one row per worker (a claiming thread of a `sorakit worker` process, here or on
# another machine). ``last_seen`` is its heartbeat; ``stopped_at`` is set by a clean stop, so a row
# whose heartbeat stopped without it is a worker that died. ``engines``: the engine and model names
# it claims tasks for.
workers = Table(
    "workers", metadata,
    Column("name", String(200), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(50), nullable=False),
    Column("engines", JSON, nullable=False),
    Column("device", Text),  # e.g. "NVIDIA H200 (cuda:0)" or "cpu"
    Column("started_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("stopped_at", Float),
    Column("current_task", String(40)),
    Column("tasks_done", Integer, nullable=False, default=0),
    Index("ix_workers_seen", "last_seen"),
)

# Values every node of one database must agree on (0009): the master secret that tokens and links
# are signed with, when the store is shared (PostgreSQL). A SQLite server keeps its secret.key file.
shared_values = Table(
    "shared_values", metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
