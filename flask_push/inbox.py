"""The notification inbox: one list of items per user, newest first.

The Python API (``push.upsert``, ``push.search``, ``push.mark_all_read``) and
the ``/notifications`` routes both call these functions, so validation and
behaviour are the same from both sides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, scoped_session

from . import signals, validation
from .errors import ValidationError
from .ids import new_id
from .models import utcnow

#: a session, or Flask-SQLAlchemy's scoped ``db.session``
AnySession = Session | scoped_session[Any]

#: the most items one page may hold
MAX_TAKE = 100
DEFAULT_TAKE = 20
_ITEM_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_TYPE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


@dataclass(frozen=True)
class SearchResult:
    """One page of a user's inbox."""

    items: list[Any]
    #: items matching the filters, across all pages
    total_count: int
    #: the user's unread items, whatever the filters
    new_count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "totalCount": self.total_count,
            "newCount": self.new_count,
            "items": [item.to_json() for item in self.items],
        }


def item_id(value: Any, field: str = "id") -> str:
    if not isinstance(value, str) or not _ITEM_ID.match(value):
        raise ValidationError(
            "must be 1-64 letters, digits, '_', '.', ':' or '-'", field=field, code="invalid_value"
        )
    return value


def notify_type(value: Any, field: str = "type") -> str:
    if not isinstance(value, str) or not _TYPE.match(value):
        raise ValidationError(
            "must be 1-64 letters, digits, '_', '.', ':' or '-'", field=field, code="invalid_value"
        )
    return value


def _progress(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"total", "processed"}:
        raise ValidationError(
            "must be an object {total, processed}", field="progress", code="invalid_value"
        )
    for key in ("total", "processed"):
        number = value.get(key)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
            raise ValidationError(
                f"{key} must be a number of at least 0",
                field=f"progress.{key}",
                code="invalid_value",
            )
    return dict(value)


def _user(user_id: Any, field: str = "userId") -> str:
    return validation.text(user_id, field, max_length=255, required=True) or ""


def _fields(values: dict[str, Any]) -> dict[str, Any]:
    """Check the fields an upsert sets; keys are column names."""
    checks = {
        "type": lambda v: notify_type(v),
        "title": lambda v: validation.text(v, "title", max_length=255, required=True),
        "body": lambda v: validation.text(v, "body", max_length=4000, allow_empty=True),
        "url": lambda v: validation.link(v),
        "data": lambda v: validation.json_object(v, "data"),
        "is_new": lambda v: validation.boolean(v, "isNew"),
        "progress": _progress,
    }
    return {name: checks[name](value) for name, value in values.items()}


def upsert(
    session: AnySession,
    model: Any,
    *,
    user_id: str,
    id: str | None = None,
    values: dict[str, Any],
) -> tuple[Any, bool]:
    """Create the item, or update the fields given in ``values`` when ``id`` exists.

    ``values`` is keyed by column (``type``, ``title``, ``body``, ``url``, ``data``,
    ``is_new``, ``progress``); absent keys are left as they are on update.
    Returns ``(item, created)``; the caller commits.
    """
    user_id = _user(user_id)
    fields = _fields({k: v for k, v in values.items() if not (k == "type" and v is None)})
    item = session.get(model, (user_id, item_id(id))) if id is not None else None
    created = item is None
    now = utcnow()
    if item is None:
        if fields.get("title") is None:
            raise ValidationError("is required for a new item", field="title", code="required")
        item = model(user_id=user_id, id=id or new_id("ntf"), created_at=now, updated_at=now)
        item.type, item.is_new = "info", True
        session.add(item)
    elif "title" in fields and fields["title"] is None:
        raise ValidationError("must not be null", field="title", code="required")
    for name, value in fields.items():
        setattr(item, name, value)
    item.updated_at = now
    session.flush()
    return item, created


def search(
    session: AnySession,
    model: Any,
    user_id: str,
    *,
    only_new: bool = False,
    types: Iterable[str] | None = None,
    skip: int = 0,
    take: int = DEFAULT_TAKE,
) -> SearchResult:
    """One page of ``user_id``'s items, newest first."""
    user_id = _user(user_id)
    skip = validation.integer(skip, "skip", low=0, high=10**9)
    take = validation.integer(take, "take", low=1, high=MAX_TAKE)
    wanted = [notify_type(t) for t in types or ()]
    where = [model.user_id == user_id]
    if only_new:
        where.append(model.is_new.is_(True))
    if wanted:
        where.append(model.type.in_(wanted))
    items = list(
        session.scalars(
            sa.select(model)
            .where(*where)
            .order_by(model.created_at.desc(), model.id.desc())
            .offset(skip)
            .limit(take)
        )
    )
    new_count = unread_count(session, model, user_id)
    if only_new and not wanted:
        total = new_count
    elif skip == 0 and len(items) < take:
        total = len(items)  # the whole result is on this page: no need to count
    else:
        total = session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0
    return SearchResult(items, total, new_count)


def unread_count(session: AnySession, model: Any, user_id: str) -> int:
    query = sa.select(sa.func.count()).select_from(model)
    return session.scalar(query.where(model.user_id == user_id, model.is_new.is_(True))) or 0


def mark_read(session: AnySession, model: Any, user_id: str, id: str | None = None) -> int:
    """Mark one item (or with ``id=None`` all of them) read; returns how many changed."""
    where = [model.user_id == _user(user_id), model.is_new.is_(True)]
    if id is not None:
        where.append(model.id == item_id(id))
    result = session.execute(
        sa.update(model).where(*where).values(is_new=False, updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def notify_saved(sender: Any, item: Any, created: bool) -> None:
    signals.inbox_item_saved.send(sender, item=item, created=created)


def notify_read(sender: Any, user_id: str, count: int) -> None:
    if count:
        signals.inbox_read.send(sender, user_id=user_id, count=count)
