"""The inbox items of scheduled messages, held until the message comes due.

``push.send(send_at=..., inbox=True)`` decides at once who gets an inbox item (the
preferences' inbox channel, as for any send; a user who turns it off before
``send_at`` gets none), but the items wait in
``push_scheduled_inbox`` until ``send_at``: the user sees nothing of the message
before its pushes go out, and a cancel takes it back. Every worker's rounds for any
message (the worker thread's, ``flask push worker``'s, a Celery worker's sweep,
``push.dispatch_due()`` without a message id) write what has come due
(:func:`write_due`) about every second, beside their claims, on a thread of their
own (:meth:`flask_push.dispatch.Dispatcher.settle_inbox`), so a message whose users
have no browser or device gets its inbox items too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import inbox
from .categories import Category
from .models import Models
from .preferences import Stored, stored_for

#: the most held items one :func:`write_due` writes (one transaction)
WRITE_AT_ONCE = 1000


def hold(
    session: Any, models: Models, message_id: str, users: Iterable[str], due_at: datetime
) -> None:
    """Keep ``message_id``'s inbox item for each of ``users`` until ``due_at``, in the
    caller's transaction."""
    rows = [{"message_id": message_id, "user_id": user, "due_at": due_at} for user in users]
    if rows:
        session.execute(sa.insert(models.ScheduledInboxItem), rows)


def held(session: Any, models: Models, message_id: str) -> int:
    """How many inbox items ``message_id`` still holds for its ``send_at``."""
    rows = models.ScheduledInboxItem
    count = session.scalar(
        sa.select(sa.func.count()).select_from(rows).where(rows.message_id == message_id)
    )
    return int(count or 0)


def drop(session: Any, models: Models, message_id: str) -> int:
    """Take back what ``message_id`` still holds (it was cancelled), in the caller's
    transaction; returns how many items will not be written."""
    held = models.ScheduledInboxItem
    result = session.execute(
        sa.delete(held).where(held.message_id == message_id),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount or 0)


class Written(NamedTuple):
    """What one :func:`write_due` did: the items written, ``(item, created)``, and the
    held rows it took, dropped ones too (fewer than :data:`WRITE_AT_ONCE`: none left)."""

    items: list[tuple[Any, bool]]
    taken: int


def write_due(
    session: Session,
    models: Models,
    now: datetime,
    categories: Mapping[str, Category] | None = None,
) -> Written:
    """Write up to :data:`WRITE_AT_ONCE` held items that have come due, oldest first;
    returns ``(item, created)`` of each, for the caller to commit and then announce,
    and how many held rows it took.
    An item of a category (of ``categories``) whose inbox channel the user has
    turned off since the message was sent is dropped: their choices as they are
    when it comes due.

    The held rows are read along their index, skipping those another worker has
    locked (PostgreSQL), then deleted by key, keeping those this delete removed: a
    second worker on SQLite waits for the first's transaction and finds them gone.
    So each item is written once. An item whose message was deleted meanwhile is
    dropped; one the host wrote itself under the message's id is updated.
    """
    held = models.ScheduledInboxItem
    due = session.execute(
        sa.select(held.message_id, held.user_id)
        .where(held.due_at <= now)
        .order_by(held.due_at)
        .limit(WRITE_AT_ONCE)
        .with_for_update(skip_locked=True)
    ).all()
    if not due:
        return Written([], 0)
    taken = session.execute(
        sa.delete(held)
        .where(sa.tuple_(held.message_id, held.user_id).in_([tuple(row) for row in due]))
        .returning(held.message_id, held.user_id),
        execution_options={"synchronize_session": False},
    ).all()
    message = models.Message
    fields: dict[str, dict[str, Any]] = {}
    ruled: dict[str, Category] = {}  # message -> the category its users choose for
    for id, notification, notify_type, category in session.execute(
        sa.select(message.id, message.notification, message.notify_type, message.category).where(
            message.id.in_({row.message_id for row in taken})
        )
    ):
        fields[id] = inbox.message_fields(notification, notify_type)
        known = (categories or {}).get(category) if category is not None else None
        if known is not None and not known.required:
            ruled[id] = known
    stored = stored_for(session, models, {r.user_id for r in taken if r.message_id in ruled})
    nobody = Stored()

    def still_wanted(row: Any) -> bool:
        category = ruled.get(row.message_id)
        if category is None:
            return True
        choices = stored.get(row.user_id, nobody).choices.get(category.id)
        return category.is_on("inbox", choices)

    written = [
        inbox.upsert(
            session, models, user_id=row.user_id, id=row.message_id, values=fields[row.message_id]
        )
        # by user: two workers lock the users' counters in one order, never deadlock
        for row in sorted(taken, key=lambda row: (row.user_id, row.message_id))
        if row.message_id in fields and still_wanted(row)
    ]
    return Written(written, len(taken))
