"""``/notifications``: the signed-in user's inbox, through the same calls as the Python API."""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from .. import inbox, validation
from .http import body, fail, not_found, only_fields, push, query_bool, query_int, user_id

_FIELDS = frozenset({"id", "userId", "type", "title", "body", "url", "data", "isNew", "progress"})


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/notifications", view_func=list_items, methods=["GET"])
    bp.add_url_rule("/notifications", view_func=upsert_item, methods=["POST"])
    bp.add_url_rule("/notifications/mark-all-read", view_func=mark_all_read, methods=["POST"])
    bp.add_url_rule("/notifications/<id>", view_func=get_item, methods=["GET"])
    bp.add_url_rule("/notifications/<id>/read", view_func=mark_read, methods=["POST"])


def list_items() -> ResponseReturnValue:
    types = [t for raw in request.args.getlist("type") for t in raw.split(",") if t]
    result = push().search(
        user_id(),
        only_new=query_bool("onlyNew"),
        types=types,
        skip=query_int("skip", 0, 0, 10**9),
        take=query_int("take", inbox.DEFAULT_TAKE, 1, inbox.MAX_TAKE),
    )
    return result.to_json()


def get_item(id: str) -> ResponseReturnValue:
    ext = push()
    item = ext.db.session.get(ext.models.InboxItem, (user_id(), id))
    if item is None:
        not_found("notification")
    return item.to_json()


def upsert_item() -> ResponseReturnValue:
    """Create an item, or update the caller's item with the given ``id``."""
    caller = user_id()
    data = body()
    only_fields(data, _FIELDS)
    owner = validation.text(data.get("userId"), "userId", max_length=255) or caller
    ext = push()
    if owner != caller and not ext.current_user_is_admin():
        fail(403, "forbidden", "Only administrators may write to another user's inbox.", "userId")
    given = {
        "type": data.get("type"),
        "title": data.get("title"),
        "body": data.get("body"),
        "url": data.get("url"),
        "data": data.get("data"),
        "progress": data.get("progress"),
        "is_new": data.get("isNew"),
    }
    item, created = ext._upsert(owner, data.get("id"), given)
    return item.to_json(), 201 if created else 200


def mark_read(id: str) -> ResponseReturnValue:
    body()  # a body, if any, must still be JSON, as for mark-all-read
    ext = push()
    owner = user_id()
    if ext.db.session.get(ext.models.InboxItem, (owner, inbox.item_id(id))) is None:
        not_found("notification")
    return {"updated": ext.mark_read(owner, id)}


def mark_all_read() -> ResponseReturnValue:
    body()  # a body, if any, must still be JSON
    return {"updated": push().mark_all_read(user_id())}
