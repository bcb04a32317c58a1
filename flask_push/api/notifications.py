"""``/notifications``: the signed-in user's inbox, through the same calls as the Python API."""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from .. import inbox
from ..schemas.base import NoFields, ecma
from ..schemas.inbox import InboxItem, InboxItemUpsert, InboxPage, InboxQuery, UpdatedCount
from ..validation import NAME
from .http import not_found, owner_for, parse_body, parse_query, push, user_id, user_or_admin
from .routes import USER, Answer, Routes

ROUTES = Routes("notifications", who=USER)
_ONE = "The item's id."
_LINKS = ("getNotification", "markNotificationRead")


@ROUTES(
    "GET",
    "/notifications",
    "listNotifications",
    "The caller's inbox, newest first",
    query=InboxQuery,
    answers={200: Answer("One page.", InboxPage)},
    errors=(400, 401),
)
def list_items() -> ResponseReturnValue:
    query = parse_query(InboxQuery)
    result = push().search(
        user_id(),
        only_new=query.only_new,
        types=query.type_names(),
        skip=query.skip,
        take=query.take,
    )
    return result.to_json()


@ROUTES(
    "GET",
    "/notifications/<id>",
    "getNotification",
    "One of the caller's items",
    id_description=_ONE,
    id_pattern=ecma(NAME),
    answers={200: Answer("The item.", InboxItem)},
    errors=(401, 404),
)
def get_item(id: str) -> ResponseReturnValue:
    ext = push()
    item = ext.db.session.get(ext.models.InboxItem, (user_id(), id))
    if item is None:
        not_found("notification")
    return InboxItem.model_validate(item).to_json()


@ROUTES(
    "POST",
    "/notifications",
    "upsertNotification",
    "Create or update an inbox item",
    who=USER + " Only an administrator may write to another user's inbox.",
    body=InboxItemUpsert,
    answers={
        201: Answer("Created.", InboxItem, _LINKS),
        200: Answer("Updated.", InboxItem, _LINKS),
    },
    errors=(401, 403, 409),
)
def upsert_item() -> ResponseReturnValue:
    """Create an item, or update the caller's item with the given ``id``."""
    caller = user_or_admin()
    given = parse_body(InboxItemUpsert)
    owner = owner_for(
        given.user_id, caller, "Only administrators may write to another user's inbox."
    )
    ext = push()
    owned = given.model_copy(update={"user_id": owner})
    item, created = inbox.save(ext.db.session, ext.models, owned)
    return InboxItem.model_validate(item).to_json(), 201 if created else 200


@ROUTES(
    "POST",
    "/notifications/<id>/read",
    "markNotificationRead",
    "Mark one of the caller's items read",
    id_description=_ONE,
    id_pattern=ecma(NAME),
    body=NoFields,
    answers={200: Answer("1 if it was unread, else 0.", UpdatedCount)},
    errors=(401, 404),
)
def mark_read(id: str) -> ResponseReturnValue:
    parse_body(NoFields)  # a body, if any: JSON, and no fields
    ext = push()
    owner = user_id()
    if ext.db.session.get(ext.models.InboxItem, (owner, inbox.item_id(id))) is None:
        not_found("notification")
    return UpdatedCount(updated=ext.mark_read(owner, id)).to_json()


@ROUTES(
    "POST",
    "/notifications/mark-all-read",
    "markAllNotificationsRead",
    "Mark all of the caller's items read",
    body=NoFields,
    answers={200: Answer("How many were unread.", UpdatedCount)},
    errors=(401,),
)
def mark_all_read() -> ResponseReturnValue:
    parse_body(NoFields)  # a body, if any: JSON, and no fields
    return UpdatedCount(updated=push().mark_all_read(user_id())).to_json()
