"""Posts: a draft shared under a public permalink (PROTOCOL section 2, ``/backend/project_y/post``).

A post is a row pointing at one generation. Deleting a post only marks it (``deleted_at``): a remix
made from it still names its id. Deleting the draft deletes its posts outright, in the same
transaction (``Store.delete_generation`` / ``delete_task``), since the row's foreign key needs the
generation. So a *live* post is one not marked deleted, whose generation still exists.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import and_, func, insert, select, update

from .schema import generations, posts, tasks
from .store import Store

POST_ID_PREFIX = "s_"


class DraftGone(LookupError):
    """The generation to post is not (or no longer) a finished video of the poster's."""


def new_post_id() -> str:
    """``s_`` and 32 lowercase hex digits, like the live service's post ids."""
    return POST_ID_PREFIX + secrets.token_hex(16)


def _live():
    return and_(posts.c.deleted_at.is_(None), generations.c.id == posts.c.generation_id)


def create_post(store: Store, user_id: str, generation_id: str, post_text: str | None) -> dict[str, Any]:
    """Post the user's finished video ``generation_id``. The draft is checked again inside the
    inserting transaction, so a draft deleted meanwhile raises :class:`DraftGone` rather than
    leaving a post without a video."""
    row = {"id": new_post_id(), "user_id": user_id, "generation_id": generation_id,
           "post_text": post_text, "created_at": store.clock(), "deleted_at": None}
    with store.engine.begin() as conn:
        found = conn.execute(select(generations.c.id).where(
            generations.c.id == generation_id, generations.c.user_id == user_id,
            generations.c.kind == "sora_draft", generations.c.video_file.is_not(None))
            .with_for_update(read=True)).first()  # FOR SHARE: a delete of the draft waits for this post
        if found is None:
            raise DraftGone(generation_id)
        conn.execute(insert(posts).values(**row))
    return row


def get_post(store: Store, post_id: str) -> dict[str, Any] | None:
    """A live post's row (not deleted, its generation still there), or None."""
    return store._one(select(posts).join(generations, _live()).where(posts.c.id == post_id))


def get_post_with_generation(store: Store, post_id: str) -> tuple[dict, dict] | None:
    """A live post and its generation's row, in one query (every page view asks)."""
    stmt = (select(posts, *[c.label(f"g__{c.name}") for c in generations.c])
            .join(generations, _live()).where(posts.c.id == post_id))
    row = store._one(stmt)
    if row is None:
        return None
    gen = {k[3:]: row.pop(k) for k in list(row) if k.startswith("g__")}
    return row, gen


def delete_post(store: Store, post_id: str, user_id: str) -> bool:
    """Mark the user's live post deleted; False when they have no such post."""
    stmt = (update(posts).where(posts.c.id == post_id, posts.c.user_id == user_id,
                                posts.c.deleted_at.is_(None)).values(deleted_at=store.clock()))
    with store.engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1


def posts_of_generation(store: Store, generation_id: str, include_deleted: bool = False) -> list[dict]:
    """The posts of one generation, oldest first."""
    stmt = select(posts).where(posts.c.generation_id == generation_id)
    if not include_deleted:
        stmt = stmt.where(posts.c.deleted_at.is_(None))
    return store._all(stmt.order_by(posts.c.created_at, posts.c.id))


def remix_count(store: Store, post_id: str) -> int:
    """How many tasks name this post as their source (``inputs.source_post_id``)."""
    stmt = (select(func.count()).select_from(tasks)
            .where(tasks.c.inputs["source_post_id"].as_string() == post_id))
    with store._read() as conn:
        return int(conn.execute(stmt).scalar_one())

