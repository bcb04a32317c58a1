"""``/messages``: send notifications over HTTP, see how their deliveries went, count clicks.

A message's ``status`` in the JSON is derived from its deliveries:

- ``scheduled``: its ``sendAt`` is still in the future;
- ``queued``: due, and every delivery is still queued (none has been tried to the end);
- ``sending``: some deliveries are done (sent, failed, gone or expired), some still queued;
- ``done``: nothing is queued any more (also a message without recipients, and a
  scheduled message that was cancelled).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from flask import current_app
from flask.typing import ResponseReturnValue

from .. import database, explain, outcomes, reports
from ..dispatch import read_click_token
from ..errors import PayloadError
from ..models import utcnow
from ..schemas.base import NoFields
from ..schemas.delivery import DeliveriesQuery, DeliveryList
from ..schemas.message import (
    DELIVERY_STATUSES,
    Message,
    MessageClick,
    MessageCreate,
    MessageDetail,
    MessageList,
    MessageProblem,
    MessageQueued,
    MessagesQuery,
    MessageStatus,
    MoreProblems,
)
from .http import (
    ApiError,
    fail,
    log,
    not_found,
    parse_body,
    parse_query,
    push,
    require_admin,
)
from .routes import ADMIN, Answer, Routes

ROUTES = Routes("messages", who=ADMIN)
_ONE = "The message's id."


# -- sending ----------------------------------------------------------------------


@ROUTES(
    "POST",
    "/messages",
    "sendMessage",
    "Send a notification to an audience",
    body=MessageCreate,
    answers={
        202: Answer(
            "Queued (or, with a known `idempotencyKey`, the first message).",
            MessageQueued,
            ("getMessage",),
        )
    },
    errors=(403, 409),
)
def create_message() -> ResponseReturnValue:
    require_admin()
    given = parse_body(MessageCreate)
    ext = push()
    try:
        message = ext.send(
            **given.audience.keywords(),
            **given.notification.model_dump(exclude_unset=True),
        )
    except PayloadError as err:
        # The request was fine; the notification it asks for is more than a push
        # service takes: a 400 about the notification, not a 413 about the request.
        fail(400, "payload_too_large", str(err), "notification")
    # read now, from the message as committed: a rollback below expires it
    queued = MessageQueued(
        id=message.id,
        status=reports.status_as_queued(message),
        recipient_count=message.recipient_count,
    )
    try:
        counts = _counts([queued.id])[queued.id]
    except (sa.exc.DBAPIError, sa.exc.TimeoutError) as err:
        # it is committed and will be sent: the client needs its id, not an error
        # that would have it send the message again
        ext.db.session.rollback()
        log.warning(
            "flask-push: %s is queued, but its counts could not be read for the answer "
            "(%s); answered as queued",
            queued.id,
            database.first_line(err),
        )
        return queued.to_json(), 202
    return queued.model_copy(update={"status": status(message, counts)}).to_json(), 202


# -- reading ----------------------------------------------------------------------


@ROUTES(
    "GET",
    "/messages",
    "listMessages",
    "Sent messages, newest first",
    query=MessagesQuery,
    answers={200: Answer("One page.", MessageList)},
    errors=(400, 403),
)
def list_messages() -> ResponseReturnValue:
    require_admin()
    query = parse_query(MessagesQuery)
    ext = push()
    model = ext.models.Message
    session = ext.db.session
    total = session.scalar(sa.select(sa.func.count()).select_from(model)) or 0
    page = list(
        session.scalars(
            sa.select(model)
            .order_by(model.created_at.desc(), model.id.desc())
            .offset(query.skip)
            .limit(query.take)
        )
    )
    counts = _counts(message.id for message in page)
    return MessageList(
        total_count=total, items=[message_of(message, counts[message.id]) for message in page]
    ).to_json()


@ROUTES(
    "GET",
    "/messages/<id>",
    "getMessage",
    "One message, with its delivery counts",
    id_description=_ONE,
    answers={200: Answer("The message.", MessageDetail)},
    errors=(403, 404),
)
def get_message(id: str) -> ResponseReturnValue:
    require_admin()
    ext = push()
    message = ext.db.session.get(ext.models.Message, id)
    if message is None:
        not_found("message")
    shown = message_of(message, _counts([message.id])[message.id])
    found = reports.problems(ext.db.session, ext.models, message.id)
    more = MoreProblems(entries=found.more, count=found.more_count) if found.more else None
    return MessageDetail(
        **dict(shown),
        problems=[MessageProblem.model_validate(problem) for problem in found.shown],
        more_problems=more,
    ).to_json()


def _counts(message_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """Deliveries per status of each message, in one grouped query."""
    ext = push()
    return reports.message_counts(ext.db.session, ext.models, message_ids)


def status(message: Any, counts: dict[str, int]) -> MessageStatus:
    """The message's status as the API answers it, from its deliveries' counts."""
    return reports.message_status(message.send_at, counts, message.cancelled_at)


def message_of(message: Any, counts: dict[str, int]) -> Message:
    """A message row, its status and counts as the API answers them."""
    shown = {state: counts.get(state, 0) for state in DELIVERY_STATUSES}
    return Message.model_validate(
        {
            "id": message.id,
            "status": status(message, counts),
            "recipientCount": message.recipient_count,
            "createdAt": message.created_at,
            "sendAt": message.send_at,
            "notification": message.notification,
            "category": message.category,
            "cancelledAt": message.cancelled_at,
            "counts": {
                **shown,
                "deferred": counts.get("deferred", 0),
                "clicked": message.clicked,
            },
        }
    )


# -- operations: why a user did or did not get it ----------------------------------------


@ROUTES(
    "GET",
    "/messages/<id>/deliveries",
    "listMessageDeliveries",
    "Each target's delivery of a message: status, reason and timeline",
    id_description=_ONE,
    query=DeliveriesQuery,
    answers={200: Answer("One page, oldest delivery first.", DeliveryList)},
    errors=(400, 403, 404),
)
def list_deliveries(id: str) -> ResponseReturnValue:
    # {"totalCount", "items"} like GET /messages: a page needs the total to page on
    require_admin()
    query = parse_query(DeliveriesQuery)
    ext = push()
    if ext.db.session.get(ext.models.Message, id) is None:
        not_found("message")
    total, entries = explain.deliveries(
        ext.db.session,
        ext.models,
        id,
        user_id=query.user_id,
        status=query.status,
        skip=query.skip,
        take=query.take,
    )
    # an empty page says why, as `flask push explain` does: else an operator reads
    # nothing at all for a message that reached no one
    why = (
        None
        if entries
        else explain.why_empty(
            ext.db.session,
            ext.models,
            id,
            total,
            user_id=query.user_id,
            status=query.status,
            skipped=f"skip={query.skip}",
        )
    )
    return DeliveryList(total_count=total, items=entries, detail=why).to_json()


@ROUTES(
    "POST",
    "/messages/<id>/cancel",
    "cancelMessage",
    "Cancel what of a message is not sent yet",
    id_description=_ONE,
    body=NoFields,
    answers={200: Answer("The message: its unsent deliveries are now `cancelled`.", Message)},
    errors=(403, 404),
)
def cancel_message(id: str) -> ResponseReturnValue:
    require_admin()
    parse_body(NoFields)  # a body, if any: JSON, and no fields
    return _operated(id, push().cancel)


@ROUTES(
    "POST",
    "/messages/<id>/retry",
    "retryFailedDeliveries",
    "Send a message's failed deliveries again",
    id_description=_ONE,
    body=NoFields,
    answers={
        200: Answer("The message: its `failed` deliveries are queued again.", Message),
    },
    errors=(403, 404, 409),
)
def retry_message(id: str) -> ResponseReturnValue:
    require_admin()
    parse_body(NoFields)  # a body, if any: JSON, and no fields
    return _operated(id, push().retry_failed)


def _operated(id: str, operation: Callable[[str], dict[str, Any]]) -> ResponseReturnValue:
    ext = push()
    if ext.db.session.get(ext.models.Message, id) is None:
        not_found("message")
    return operation(id)


# -- clicks -----------------------------------------------------------------------


def _forbidden() -> ApiError:
    return ApiError(403, "forbidden", "The click token is missing, forged or not for this message.")


@ROUTES(
    "POST",
    "/messages/<id>/clicks",
    "recordMessageClick",
    "Count a click on a message's notification",
    who="Anyone holding a click token of this message (the service worker). A "
    "missing, forged or other message's token answers 403, as does every token when "
    "the app has no SECRET_KEY. Every valid click is counted.",
    id_description=_ONE,
    body=MessageClick,
    answers={204: Answer("Counted, and the user's inbox item of the message is read.")},
    errors=(403, 404),
)
def click(id: str) -> ResponseReturnValue:
    """Count a click on a notification of message ``id``, proven by its click token.

    Each delivery's clicks count once: a notification clicked again (or a
    report sent twice) changes nothing.
    """
    token = parse_body(MessageClick).click_token
    secret = current_app.config.get("SECRET_KEY")
    # a token is URL-safe base64 and dots: anything else is no token of ours
    if not token or not secret or not token.isascii():
        raise _forbidden()
    found = read_click_token(secret, token)
    if found is None or found[1] != id:
        raise _forbidden()
    ext = push()
    session = ext.db.session
    message, delivery = ext.models.Message, ext.models.Delivery
    row = session.get(message, id)
    if row is None:
        not_found("message")
    item_id = row.activity_id or row.id  # its inbox item's id (an activity's is its own)
    now = utcnow()
    events, user_id = session.execute(
        sa.select(delivery.events, delivery.user_id).where(
            delivery.id == found[0], delivery.message_id == id
        )
    ).one_or_none() or (None, None)
    clicked = outcomes.event("clicked", now, outcomes.detail("clicked", at=now))
    first = session.execute(
        sa.update(delivery)
        .where(delivery.id == found[0], delivery.message_id == id, delivery.clicked_at.is_(None))
        .values(clicked_at=now, events=[*(events or ()), clicked])
    )
    if first.rowcount:  # type: ignore[attr-defined]
        session.execute(
            sa.update(message).where(message.id == id).values(clicked=message.clicked + 1)
        )
    session.commit()
    if first.rowcount and user_id is not None:  # type: ignore[attr-defined]
        # She opened it: its inbox item is read, in the bell and on every open page
        # (none, when the message wrote no item for her).
        ext.mark_read(user_id, item_id)
    return "", 204
