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
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session, scoped_session

from .. import signals
from ..errors import PushError
from ..schemas.inbox import InboxItem
from .backplane import BackplaneResting
from .events import user_channel

log = logging.getLogger("flask_push.realtime")

_PENDING = "flask_push.after_commit"
#: callbacks of a committed transaction, run once it has ended
_COMMITTED = "flask_push.committed"


def connect() -> None:
    """Publish inbox changes; idempotent (blinker connects a receiver once)."""
    signals.inbox_item_saved.connect(_item_saved)
    signals.inbox_read.connect(_read)


def _item_saved(app: Flask, item: Any, **extra: Any) -> None:
    # flask-push sends these signals after its own commits, where the session may
    # read again: the count is read on the connection the item's refresh takes
    publish_item(app, str(item.user_id), InboxItem.model_validate(item).to_json(), in_session=True)


def _read(app: Flask, user_id: str, **extra: Any) -> None:
    publish_item(app, user_id, None, in_session=True)


def publish_item(
    app: Flask, user_id: str, item: dict[str, Any] | None, *, in_session: bool = False
) -> None:
    """Publish ``item`` (when given) and the unread count to ``user:<user_id>``.

    Runs after a commit the caller already made, so any failure (a backplane
    that is down, data it cannot carry) is logged, not raised: the change itself
    succeeded, and clients catch up with ``since`` or on their next load.
    ``in_session``: read the count through the app's session (it may run SQL
    now) rather than on a connection of its own.
    """
    state = app.extensions.get("push")
    if state is None:
        return
    push = state.push
    channel = user_channel(user_id)
    realtime = state.get_realtime()
    if item is not None:
        # An item the websocket cannot carry (it holds a lone surrogate, say) must
        # not keep the unread count from going out.
        publish_committed(realtime.publish, channel, "notification", item)
    count = _unread(push, user_id, in_session)
    publish_committed(realtime.publish, channel, "unread", {"count": count})


def publish_committed(
    publish: Callable[[str, str, Any], Any], channel: str, event: str, data: Any
) -> None:
    """``publish(channel, event, data)`` after a commit the caller already made: a
    failure is logged, never raised, since the change itself succeeded (the sockets
    here on the channel got a ``gap``, so their clients reload it)."""
    try:
        publish(channel, event, data)
    except BackplaneResting as err:  # the failure moments ago was logged
        log.debug("flask-push: the %r event on %r was not published live: %s", event, channel, err)
    except PushError as err:
        log.warning(
            "flask-push: the %r event on %r was not published live: %s", event, channel, err
        )
    except Exception:
        log.exception("flask-push: the %r event on %r was not published live", event, channel)


def _unread(push: Any, user_id: str, in_session: bool) -> int:
    counter = push.models.InboxCounter
    query = sa.select(counter.unread).where(counter.user_id == user_id)
    if in_session:
        count = push.db.session.scalar(query)
    else:
        # After a caller's commit (see on_commit): the session's connection is
        # back in the pool by then, so this one is the request's only one.
        with push.db.engine.connect() as connection:
            count = connection.scalar(query)
    return int(count or 0)


def on_commit(session: Session | scoped_session[Any], callback: Callable[[], None]) -> None:
    """Call ``callback`` once the session's current transaction has committed and
    given its connection back to the pool (never if it rolls back, nor if the
    savepoint it was asked in rolls back)."""
    real = session() if isinstance(session, scoped_session) else session
    # the savepoint (or transaction) it belongs to; None: the one yet to begin
    within = real.get_nested_transaction() or real.get_transaction()
    real.info.setdefault(_PENDING, []).append((within, callback))


def _inside(transaction: Any, ended: Any) -> bool:
    """Is ``transaction`` ``ended`` or one of the savepoints begun inside it?"""
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False


@sa.event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction: Any) -> None:
    if not previous_transaction.nested:
        return  # the whole transaction: _after_end drops everything
    # A savepoint rolled back: what was asked inside it never happened. (A released
    # one keeps its callbacks: the outer transaction's commit or rollback decides.)
    pending = session.info.get(_PENDING)
    if pending:
        pending[:] = [
            (within, c) for within, c in pending if not _inside(within, previous_transaction)
        ]


@sa.event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint released: the outer transaction may still roll back
    committed = session.info.pop(_PENDING, None)
    if committed:
        session.info.setdefault(_COMMITTED, []).extend(callback for _, callback in committed)


@sa.event.listens_for(Session, "after_transaction_end")
def _after_end(session: Session, transaction: Any) -> None:
    if transaction.parent is not None:
        return
    # The outermost transaction ended, and its connection went back to the pool.
    # Callbacks run only now, not in after_commit, where the connection is still
    # held: a callback that reads the database on a connection of its own would
    # hold two per request, and enough requests at once would each wait for a
    # second that never comes free (the pool's timeout, then errors).
    session.info.pop(_PENDING, None)  # rolled back: nothing to announce
    for callback in session.info.pop(_COMMITTED, ()):
        try:
            callback()
        except Exception:  # the commit happened; a live event is not worth failing it
            log.exception("flask-push: after-commit publish failed")
