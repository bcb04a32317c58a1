"""The notification inbox: one list of items per user, newest first.

The Python API (``push.upsert``, ``push.search``, ``push.mark_all_read``) and
the ``/notifications`` routes both call these functions, with values checked by the
same model (:class:`flask_push.schemas.inbox.InboxItemUpsert`), so validation and
behaviour are the same from both sides.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy.orm import Session, scoped_session
from sqlalchemy.orm.attributes import set_committed_value

from . import database, signals
from .errors import ValidationError
from .ids import new_id
from .models import Models, utcnow
from .realtime import inbox_events
from .schemas.errors import check
from .schemas.fields import DEFAULT_TAKE, NotifyType, Skip, Take, UserId
from .schemas.inbox import InboxItem, InboxItemUpsert, InboxPage, ItemId

#: a session, or Flask-SQLAlchemy's scoped ``db.session``
AnySession = Session | scoped_session[Any]

T = TypeVar("T")


@dataclass(frozen=True)
class SearchResult:
    """One page of a user's inbox."""

    items: list[Any]
    #: items matching the filters, across all pages
    total_count: int
    #: the user's unread items, whatever the filters
    new_count: int

    def to_json(self) -> dict[str, Any]:
        return InboxPage.model_validate(self).to_json()


def item_id(value: Any, field: str = "id") -> str:
    return str(check(ItemId, value, field))


def notify_type(value: Any, field: str = "type") -> str:
    return str(check(NotifyType, value, field))


def _user(user_id: Any, field: str = "userId") -> str:
    return str(check(UserId, user_id, field))


# -- writing, as the Python API and the routes do -------------------------------------
# (commit or not, then tell: the ``inbox_item_saved`` and ``inbox_read`` signals, and
# the live events, go out only once the change is committed)


def save(
    session: AnySession, models: Models, given: InboxItemUpsert, *, commit: bool = True
) -> tuple[Any, bool]:
    """``push.upsert()`` and ``POST /notifications``: write the checked item (its
    ``user_id`` set), commit unless ``commit=False``, and announce it once committed;
    returns ``(item, created)``."""
    item, created = _write(
        session,
        lambda: upsert(
            session, models, user_id=str(given.user_id), id=given.id, values=given.columns()
        ),
        commit,
        rows=lambda saved: saved[:1],
    )
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if commit:
        signals.send_committed(signals.inbox_item_saved, app, item=item, created=created)
    else:
        _publish_on_commit(
            session, app, str(item.user_id), InboxItem.model_validate(item).to_json()
        )
    return item, created


def read(
    session: AnySession, models: Models, user_id: str, id: str | None, *, commit: bool = True
) -> int:
    """``push.mark_read()``: :func:`mark_read`, committed unless ``commit=False`` and
    announced once committed; returns how many items were unread."""
    count = _write(session, lambda: mark_read(session, models, user_id, id), commit)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if commit:
        if count:
            signals.send_committed(signals.inbox_read, app, user_id=str(user_id), count=count)
    elif count:
        _publish_on_commit(session, app, str(user_id), None)
    return count


def _publish_on_commit(
    session: AnySession, app: Flask, user_id: str, item: dict[str, Any] | None
) -> None:
    """The live ``notification``/``unread`` events of a ``commit=False`` change,
    published when the caller commits (the item as it is now)."""
    inbox_events.on_commit(session, lambda: inbox_events.publish_item(app, user_id, item))


def _write(
    session: AnySession,
    work: Callable[[], T],
    commit: bool,
    rows: Callable[[T], Iterable[Any]] = lambda result: (),
) -> T:
    """Run ``work`` in the session and commit, keeping the ``rows`` of its result
    loaded (:func:`~flask_push.database.commit_keeping`); on failure roll back, so
    nothing is half-written. With ``commit=False`` the caller owns the transaction."""
    if not commit:
        return work()
    try:
        result = work()
        database.commit_keeping(session, *rows(result))
        return result
    except BaseException:
        session.rollback()
        raise


def message_fields(shown: Mapping[str, Any], notify_type: str | None) -> dict[str, Any]:
    """The inbox item of a message (``shown``: its notification as the API shows it),
    keyed by the item's columns."""
    values = {
        "title": shown["title"],
        "body": shown.get("body"),
        "url": shown.get("url"),
        "data": shown.get("data") or None,
        "type": notify_type,
    }
    return {k: v for k, v in values.items() if v is not None}


# -- the rows --------------------------------------------------------------------------


def upsert(
    session: AnySession,
    models: Models,
    *,
    user_id: str,
    id: str | None = None,
    values: dict[str, Any],
    fresh_id: bool = False,
) -> tuple[Any, bool]:
    """Create the item, or update the fields given in ``values`` when ``id`` exists.

    ``values`` is keyed by column (``type``, ``title``, ``body``, ``url``, ``data``,
    ``is_new``, ``progress``), checked (:class:`~flask_push.schemas.inbox.InboxItemUpsert`
    says how) and not null; absent keys are left as they are on update.
    ``fresh_id=True`` says ``id`` was just made (a new message's), so no item can
    have it yet. Returns ``(item, created)``; the caller commits.
    """
    model = models.InboxItem
    fields = dict(values)
    now = utcnow()
    # read again, not taken as the session holds it: a worker that upserts one item
    # for a while (its progress) keeps it loaded through its commits, and what
    # others wrote since (the user read it, a title changed) would be written over
    # unseen, or left as it is where a field seemed unchanged
    key = (user_id, id)
    item: Any = None if fresh_id or id is None else session.get(model, key, populate_existing=True)
    if item is None:
        item = _create(session, model, user_id, id, fields, now, may_race=not fresh_id)
        if item is not None:
            _count(session, models, user_id, total=1, unread=int(item.is_new))
            return item, True
        # another request created this id since we looked: update theirs
        item = session.get(model, key, populate_existing=True)
    is_new = fields.pop("is_new", None)
    for name, value in fields.items():
        setattr(item, name, value)
    item.updated_at = now
    session.flush()
    if is_new is not None:
        # Flip is_new only where it differs, so that the counter moves by what
        # really changed even when another request marked the item read meanwhile.
        flipped = _set_new(
            session, model, [model.user_id == user_id, model.id == item.id], is_new, now
        )
        _count(session, models, user_id, unread=flipped if is_new else -flipped)
        set_committed_value(item, "is_new", is_new)
    return item, False


def _create(
    session: AnySession,
    model: Any,
    user_id: str,
    id: str | None,
    fields: dict[str, Any],
    now: Any,
    *,
    may_race: bool,
) -> Any | None:
    """Insert a new item; ``None`` when a concurrent request inserted ``id`` first.

    A caller-chosen id may be written by two requests at once (two updates of
    one activity, a client retrying): on PostgreSQL and SQLite the insert is
    ``ON CONFLICT DO NOTHING``, so the loser updates the winner's item instead of
    failing the whole request. (Not a savepoint: pysqlite runs a SAVEPOINT outside
    the transaction, and releasing it would commit a ``commit=False`` write.)
    """
    if fields.get("title") is None:
        raise ValidationError("is required for a new item", field="title", code="required")
    row = {
        "user_id": user_id,
        "id": id or new_id("ntf"),
        "created_at": now,
        "updated_at": now,
        "type": "info",
        "is_new": True,
        **fields,
    }
    insert = database.on_conflict_insert(session.get_bind(mapper=model).dialect)
    if id is None or not may_race or insert is None:
        item = model(**row)
        session.add(item)
        session.flush()
        return item
    statement = (
        insert(model)
        .values(row)
        .on_conflict_do_nothing(index_elements=[model.user_id, model.id])
        .returning(model)
    )
    return session.scalars(statement, execution_options={"populate_existing": True}).one_or_none()


def search(
    session: AnySession,
    models: Models,
    user_id: str,
    *,
    only_new: bool = False,
    types: Iterable[str] | None = None,
    skip: int = 0,
    take: int = DEFAULT_TAKE,
) -> SearchResult:
    """One page of ``user_id``'s items, newest first, with the counts; ``types``:
    the types to list (a string: that one type), all when None.

    The page and the user's counters come back in one statement; only a
    filter by type needs a count of its own. Items are read-only rows with the
    model's attribute names.
    """
    user_id = _user(user_id)
    skip = int(check(Skip, skip, "skip"))
    take = int(check(Take, take, "take"))
    # one type as a string is that type, not its letters
    wanted = [notify_type(t) for t in ([types] if isinstance(types, str) else types or ())]
    params = {"user_id": user_id, "skip": skip, "take": take, "types": wanted}
    # Core, not the ORM: the rows are only read, so the identity map would be
    # pure overhead on the busiest route.
    with _reading(session, models) as connection:
        rows = connection.execute(_page_query(models, only_new, bool(wanted)), params).all()
        if not rows:
            return SearchResult([], 0, 0)  # no counters: the user has never had an item
        total, unread = rows[0]._total, rows[0]._unread
        items = [row for row in rows if row.id is not None]
        if wanted:
            total = connection.execute(_count_query(models, only_new), params).scalar_one()
        elif only_new:
            total = unread
    return SearchResult(items, total, unread)


@contextmanager
def _reading(session: AnySession, models: Models) -> Iterator[sa.Connection]:
    """A connection to read the inbox on.

    Inside a transaction that is the session's own, which sees the caller's
    uncommitted writes. Otherwise it is a pooled connection in autocommit: a
    transaction would cost a BEGIN and a ROLLBACK, two more round trips than the
    read itself, and buy nothing, since each statement of a PostgreSQL
    transaction at the default isolation level (read committed) takes its own
    snapshot anyway.
    """
    current = session() if isinstance(session, scoped_session) else session
    if current.in_transaction():
        yield current.connection()
        return
    engine = session.get_bind(mapper=models.InboxItem)
    with _autocommit(engine).connect() as connection:
        yield connection


@functools.lru_cache(maxsize=16)
def _autocommit(engine: sa.Engine) -> sa.Engine:
    """``engine`` in autocommit: the same pool, with connections switched on checkout."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _filters(models: Models, only_new: bool, by_type: bool) -> list[Any]:
    model = models.InboxItem
    where = [model.user_id == sa.bindparam("user_id")]
    if only_new:
        where.append(model.is_new == sa.true())  # "IS true" would not use the partial index
    if by_type:
        where.append(model.type.in_(sa.bindparam("types", expanding=True)))
    return where


@functools.cache
def _page_query(models: Models, only_new: bool, by_type: bool) -> sa.Select[Any]:
    """One page of items joined to the user's counters; built once per shape.

    A left join from the counters keeps one row (with null item columns) when
    the page itself is empty.
    """
    model, counter = models.InboxItem, models.InboxCounter
    page = (
        sa.select(*model.__table__.c)
        .where(*_filters(models, only_new, by_type))
        .order_by(model.created_at.desc(), model.id.desc())
        .offset(sa.bindparam("skip"))
        .limit(sa.bindparam("take"))
        .subquery()
    )
    counts = (
        sa.select(counter.total, counter.unread)
        .where(counter.user_id == sa.bindparam("user_id"))
        .subquery()
    )
    return (
        sa.select(page, counts.c.total.label("_total"), counts.c.unread.label("_unread"))
        .select_from(counts.outerjoin(page, sa.true()))
        .order_by(page.c.created_at.desc(), page.c.id.desc())
    )


@functools.cache
def _count_query(models: Models, only_new: bool) -> sa.Select[Any]:
    model = models.InboxItem
    return sa.select(sa.func.count()).select_from(model).where(*_filters(models, only_new, True))


def mark_read(session: AnySession, models: Models, user_id: str, id: str | None = None) -> int:
    """Mark one item (or with ``id=None`` all of them) read; returns how many changed."""
    model = models.InboxItem
    where = [model.user_id == _user(user_id)]
    if id is not None:
        where.append(model.id == item_id(id))
    changed = _set_new(session, model, where, False, utcnow())
    _count(session, models, user_id, unread=-changed)
    return changed


def _set_new(session: AnySession, model: Any, where: list[Any], is_new: bool, now: Any) -> int:
    """Set is_new on the rows matching ``where`` where it differs; returns how many."""
    result = session.execute(
        sa.update(model)
        .where(*where, model.is_new == (not is_new))
        .values(is_new=is_new, updated_at=now),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _count(
    session: AnySession, models: Models, user_id: str, total: int = 0, unread: int = 0
) -> None:
    """Move a user's counters, in the caller's transaction.

    Keeping the counts in a row of their own makes ``totalCount`` and
    ``newCount`` (shown on every page with a bell) cost one index lookup
    however large the inbox grows. Increments are relative, so concurrent
    writers add up instead of overwriting each other.
    """
    if not total and not unread:
        return
    counter = models.InboxCounter
    change = {"total": counter.total + total, "unread": counter.unread + unread}
    update = sa.update(counter).where(counter.user_id == user_id).values(change)
    options = {"synchronize_session": False}
    if session.execute(update, execution_options=options).rowcount:  # type: ignore[attr-defined]
        return
    try:
        with session.begin_nested():  # the user's first item; another request may race us
            session.execute(sa.insert(counter).values(user_id=user_id, total=total, unread=unread))
    except sa.exc.IntegrityError:
        session.execute(update, execution_options=options)


def recount(session: AnySession, models: Models, user_id: str) -> tuple[int, int]:
    """Set a user's counters from their items; returns ``(total, unread)``.

    Only needed after rows were changed behind flask-push's back (say, deleted
    with SQL); everything flask-push writes keeps the counters right.
    """
    model, counter = models.InboxItem, models.InboxCounter
    total, unread = session.execute(
        sa.select(sa.func.count(), sa.func.count().filter(model.is_new == sa.true())).where(
            model.user_id == _user(user_id)
        )
    ).one()
    session.execute(sa.delete(counter).where(counter.user_id == user_id))
    session.execute(sa.insert(counter).values(user_id=user_id, total=total, unread=unread))
    return total, unread
