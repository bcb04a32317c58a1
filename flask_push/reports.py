"""What happened to a message's deliveries: counts per status, and why some failed.

One place for the questions the API (``GET /messages/<id>``) and the CLI
(``flask push send``) both answer, so they cannot tell different stories.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .models import Models, utcnow
from .outcomes import RETRY_ADVISED, delivery_detail
from .outcomes import STATUSES as DELIVERY_STATUSES
from .outcomes import UNDELIVERED as _UNDELIVERED
from .schemas.message import MessageStatus


@dataclass(frozen=True)
class Problem:
    """Deliveries of one message that ended the same way for the same cause: one
    status, one machine reason and one provider kind.

    ``status`` is ``queued`` for deliveries that wait for a retry: ``reason`` is
    then what the push service said at the last attempt.
    """

    status: str
    #: what the push service or flask-push said, for the newest of them (the last
    #: written): texts of one cause differ (APNs puts each token's own time in its
    #: ``Unregistered``)
    reason: str
    count: int
    last_at: datetime
    #: the machine reason (a key of :data:`flask_push.outcomes.REASONS`); None for
    #: deliveries written before it was kept, which are told apart by their text
    code: str | None
    #: the provider kind (webpush, fcm, apns)
    kind: str
    #: the sentence that explains the newest of them, as its ``detail`` in
    #: :func:`flask_push.explain.deliveries`: what a person reads beside ``reason``
    detail: str | None = None


@dataclass(frozen=True)
class Problems:
    r"""A message's :class:`Problem`\ s, the most recent first, and what the limit
    left out of them."""

    shown: list[Problem]
    #: the causes past the limit, and their deliveries
    more: int = 0
    more_count: int = 0


def delivery_counts(
    session: Any, models: Models, message_ids: Iterable[str]
) -> dict[str, dict[str, int]]:
    """Deliveries per status of each message (every status present), in one query."""
    ids = list(message_ids)
    counts = {id: dict.fromkeys(DELIVERY_STATUSES, 0) for id in ids}
    if ids:
        d = models.Delivery
        rows = session.execute(
            sa.select(d.message_id, d.status, sa.func.count())
            .where(d.message_id.in_(ids))
            .group_by(d.message_id, d.status)
        )
        for message_id, status, count in rows:
            counts[message_id][status] = int(count)
    return counts


def message_counts(
    session: Any, models: Models, message_ids: Iterable[str]
) -> dict[str, dict[str, int]]:
    """:func:`delivery_counts`, plus ``deferred``: of the queued ones, those waiting
    for the end of their users' quiet hours; in one grouped query too."""
    ids = list(message_ids)
    counts = {id: dict.fromkeys((*DELIVERY_STATUSES, "deferred"), 0) for id in ids}
    if ids:
        d = models.Delivery
        waiting = sa.case((sa.and_(d.status == "queued", d.reason == "quiet_hours"), 1), else_=0)
        rows = session.execute(
            sa.select(d.message_id, d.status, waiting, sa.func.count())
            .where(d.message_id.in_(ids))
            .group_by(d.message_id, d.status, waiting)
        )
        for message_id, status, deferred, count in rows:
            counts[message_id][status] += int(count)
            if deferred:
                counts[message_id]["deferred"] += int(count)
    return counts


def message_status(
    send_at: datetime | None, counts: dict[str, int], cancelled_at: datetime | None = None
) -> MessageStatus:
    """A message's status from its deliveries' ``counts``: ``scheduled`` until
    ``send_at``, ``queued`` while none has gone, ``sending`` while some wait, then
    ``done``; a message an operator cancelled (at ``cancelled_at``) is done once
    nothing of it waits."""
    queued = counts.get("queued", 0)
    # a scheduled message that was cancelled will never go out: it is done
    if send_at is not None and send_at > utcnow() and cancelled_at is None:
        return "scheduled"
    if not queued:
        return "done"
    if queued == sum(counts.get(state, 0) for state in DELIVERY_STATUSES):
        return "queued"
    return "sending"


def status_as_queued(message: Any) -> MessageStatus:
    """The status ``message`` was queued with, from its own columns (no query): what
    a send answers at once, before its deliveries say more."""
    return message_status(message.send_at, {"queued": message.recipient_count or 0})


def cancelled(session: Any, models: Models, message_ids: Iterable[str]) -> set[str]:
    """Those of ``message_ids`` an operator cancelled (nothing of them is sent again,
    a retry included). One query."""
    ids = set(message_ids)
    if not ids:
        return set()
    m = models.Message
    return set(session.scalars(sa.select(m.id).where(m.id.in_(ids), m.cancelled_at.is_not(None))))


def problems(
    session: Any,
    models: Models,
    message_id: str,
    limit: int = 10,
    *,
    leave_out: Sequence[str] = (),
) -> Problems:
    """The reasons a message's deliveries failed, are gone or expired, or wait for a
    retry: one per status, machine reason and provider kind, the most recent first,
    at most ``limit``, with how many more there were; without those of the machine
    reasons in ``leave_out``."""
    d = models.Delivery
    # one cause, whatever its texts say; a row without a machine reason (written
    # before they were kept) is told apart by its text, as it was then. A hash
    # aggregate: a window over every row would sort them all, texts and all.
    cause = sa.func.coalesce(d.reason, d.error)
    last_at = sa.func.max(d.updated_at)
    groups = session.execute(
        sa.select(
            d.status,
            sa.func.max(d.reason).label("code"),  # the reason itself, or None
            d.kind,
            sa.func.count().label("count"),
            last_at.label("last_at"),
            sa.func.max(d.id).label("latest"),
        )
        .where(
            d.message_id == message_id,
            sa.or_(
                d.status.in_(_UNDELIVERED),
                sa.and_(d.status == "queued", d.error.is_not(None)),
            ),
            *([sa.or_(d.reason.is_(None), d.reason.not_in(leave_out))] if leave_out else []),
        )
        .group_by(d.status, cause, d.kind)
        # every cause, not ``limit`` of them: there are few (statuses x machine
        # reasons x kinds), and the ones past the limit are counted
        .order_by(last_at.desc(), d.status, d.kind)
    ).all()
    # the text and sentence of each cause shown: its latest delivery's
    ids = [group.latest for group in groups[:limit]]
    latest = {
        row.id: row
        for row in session.execute(
            sa.select(d.id, d.status, d.reason, d.error, d.events, d.lease_until, d.due_at).where(
                d.id.in_(ids)
            )
        )
    }
    # a sentence that advises a retry says too when the message was cancelled since
    advised = any(group.code in RETRY_ADVISED for group in groups[:limit])
    stopped = advised and message_id in cancelled(session, models, [message_id])
    shown = []
    for group in groups[:limit]:
        row = latest.get(group.latest)
        said = delivery_detail(row, cancelled=stopped) if row else None
        shown.append(
            # max() keeps the column's type: ``last_at`` is an aware datetime
            Problem(
                group.status,
                (row.error if row else None) or "no reason was recorded",
                int(group.count),
                group.last_at,
                group.code,
                group.kind,
                said,
            )
        )
    cut = groups[limit:]
    return Problems(shown, len(cut), sum(int(group.count) for group in cut))
