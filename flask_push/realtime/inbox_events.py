"""Inbox changes as live events on the user's channel ``user:<id>``.

``notification`` carries the inbox item (as the API shows it) when one is
created or updated; ``unread`` carries ``{"count": n}`` after an upsert or a
read. Both are published only once the change is committed: from the
``inbox_item_saved`` and ``inbox_read`` signals, which flask-push sends after
its commits, and, for ``commit=False`` calls, from the caller's own commit (a
session ``after_commit`` hook; a rollback publishes nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session, scoped_session

from .. import signals
from ..errors import PushError
from ..schemas.inbox import InboxItem

if TYPE_CHECKING:
    from . import Realtime

log = logging.getLogger("flask_push.realtime")

_PENDING = "flask_push.after_commit"


def connect() -> None:
    """Publish inbox changes; idempotent (blinker connects a receiver once)."""
    signals.inbox_item_saved.connect(_item_saved)
    signals.inbox_read.connect(_read)


def _item_saved(app: Flask, item: Any, **extra: Any) -> None:
    publish_item(app, str(item.user_id), InboxItem.model_validate(item).to_json())


def _read(app: Flask, user_id: str, **extra: Any) -> None:
    publish_item(app, user_id, None)


def publish_item(app: Flask, user_id: str, item: dict[str, Any] | None) -> None:
    """Publish ``item`` (when given) and the unread count to ``user:<user_id>``.

    Runs after a commit the caller already made, so any failure (a backplane
    that is down, data it cannot carry) is logged, not raised: the change itself
    succeeded, and clients catch up with ``since`` or on their next load.
    """
    state = app.extensions.get("push")
    if state is None:
        return
    push = state.push
    channel = f"user:{user_id}"
    realtime = state.get_realtime()
    if item is not None:
        # An item the websocket cannot carry (it holds a lone surrogate, say) must
        # not keep the unread count from going out.
        _publish(realtime, channel, "notification", item)
    _publish(realtime, channel, "unread", {"count": _unread(push, user_id)})


def _publish(realtime: Realtime, channel: str, event: str, data: Any) -> None:
    """Publish after a commit the caller already made: a failure is logged, never
    raised, since the change itself succeeded and clients catch up with ``since``."""
    try:
        realtime.publish(channel, event, data)
    except PushError as err:
        log.warning(
            "flask-push: the %r event on %s was not published live: %s", event, channel, err
        )
    except Exception:
        log.exception("flask-push: the %r event on %s was not published live", event, channel)


def _unread(push: Any, user_id: str) -> int:
    # A connection of its own: this may run inside the session's after_commit,
    # where the session itself may not run SQL.
    counter = push.models.InboxCounter
    with push.db.engine.connect() as connection:
        count = connection.scalar(sa.select(counter.unread).where(counter.user_id == user_id))
    return int(count or 0)


def on_commit(session: Session | scoped_session[Any], callback: Callable[[], None]) -> None:
    """Call ``callback`` after the session's current transaction commits (never
    if it rolls back)."""
    real = session() if isinstance(session, scoped_session) else session
    real.info.setdefault(_PENDING, []).append(callback)


@sa.event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    for callback in session.info.pop(_PENDING, ()):
        try:
            callback()
        except Exception:  # the commit happened; a live event is not worth failing it
            log.exception("flask-push: after-commit publish failed")


@sa.event.listens_for(Session, "after_transaction_end")
def _after_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the outermost transaction; a commit ran the callbacks
        session.info.pop(_PENDING, None)
