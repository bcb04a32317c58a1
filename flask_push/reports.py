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

from .models import Models
from .outcomes import STATUSES as DELIVERY_STATUSES
from .outcomes import UNDELIVERED as _UNDELIVERED


@dataclass(frozen=True)
class Problem:
    """Deliveries of one message with the same status and the same reason.

    ``status`` is ``queued`` for deliveries that wait for a retry: ``reason`` is
    then what the push service said at the last attempt.
    """

    status: str
    reason: str
    count: int
    last_at: datetime


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


def problems(
    session: Any,
    models: Models,
    message_id: str,
    limit: int = 10,
    *,
    leave_out: Sequence[str] = (),
) -> list[Problem]:
    """The reasons a message's deliveries failed, are gone or expired, or wait for a
    retry: one per status and reason, the most recent first, at most ``limit``;
    without those of the machine reasons in ``leave_out``."""
    d = models.Delivery
    last_at = sa.func.max(d.updated_at)
    rows = session.execute(
        sa.select(d.status, d.error, sa.func.count(), last_at)
        .where(
            d.message_id == message_id,
            sa.or_(
                d.status.in_(_UNDELIVERED),
                sa.and_(d.status == "queued", d.error.is_not(None)),
            ),
            *([sa.or_(d.reason.is_(None), d.reason.not_in(leave_out))] if leave_out else []),
        )
        .group_by(d.status, d.error)
        .order_by(last_at.desc(), d.status)
        .limit(limit)
    ).all()
    return [
        # max() keeps the column's type, so ``at`` comes back an aware datetime
        Problem(status, error or "no reason was recorded", int(count), at)
        for status, error, count, at in rows
    ]
