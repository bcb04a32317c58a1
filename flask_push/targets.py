"""A user's browsers and devices, their state, and their recent deliveries.

Three queries whatever the number of targets: the subscriptions, the
installations, and the latest deliveries of all of them at once (a window
function keeps ``recent`` per target).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from . import outcomes, reports
from .labels import label_of
from .models import DEAD, Models
from .providers import kind_for_platform, service_name, subscriptions_kind
from .schemas.delivery import UserTarget

#: how many deliveries of each target :func:`user_targets` gives unless told
DEFAULT_RECENT = 5
#: the most a caller may ask for per target
MAX_RECENT = 100


def user_targets(
    session: Any, models: Models, user_id: str, *, recent: int = DEFAULT_RECENT
) -> list[UserTarget]:
    """The subscriptions and installations of ``user_id``, oldest first, each with
    its latest ``recent`` deliveries, newest first."""
    sub, ins, d, msg = models.Subscription, models.Installation, models.Delivery, models.Message
    subscriptions = list(
        session.scalars(
            sa.select(sub).where(sub.user_id == user_id).order_by(sub.created_at, sub.id)
        )
    )
    installations = list(
        session.scalars(
            sa.select(ins).where(ins.user_id == user_id).order_by(ins.created_at, ins.id)
        )
    )
    latest: dict[str, list[dict[str, Any]]] = {}
    if recent > 0 and (subscriptions or installations):
        target = sa.func.coalesce(d.subscription_id, d.installation_id)
        ranked = (
            sa.select(
                target.label("target"),
                d.message_id,
                d.status,
                d.reason,
                d.error,
                d.events,
                d.lease_until,
                d.due_at,
                d.updated_at,
                sa.func.row_number().over(partition_by=target, order_by=d.id.desc()).label("rank"),
            )
            .where(
                sa.or_(
                    d.subscription_id.in_([s.id for s in subscriptions]),
                    d.installation_id.in_([i.id for i in installations]),
                ),
                # not what the target got while someone else's (a browser that signed
                # in as this user); rows without a user were written before they kept it
                sa.or_(d.user_id == user_id, d.user_id.is_(None)),
            )
            .subquery()
        )
        rows = session.execute(
            sa.select(ranked, msg.notification)
            .outerjoin(msg, msg.id == ranked.c.message_id)
            .where(ranked.c.rank <= recent)
            .order_by(ranked.c.target, ranked.c.rank)
        ).all()
        # a sentence that advises a retry says too when its message was cancelled since
        stopped = reports.cancelled(
            session,
            models,
            {row.message_id for row in rows if row.reason in outcomes.RETRY_ADVISED},
        )
        for row in rows:
            latest.setdefault(row.target, []).append(
                {
                    "messageId": row.message_id,
                    "title": (row.notification or {}).get("title"),
                    "status": row.status,
                    "reason": row.reason,
                    "detail": outcomes.delivery_detail(row, cancelled=row.message_id in stopped),
                    "at": row.updated_at,
                }
            )
    found = [(s, s.last_seen_at) for s in subscriptions] + [
        (i, i.modified_at) for i in installations
    ]
    # oldest first across both tables, as each query gives its own (then by id, so
    # two registered in the same instant keep one order)
    found.sort(key=lambda entry: (entry[0].created_at, entry[0].id))
    return [
        UserTarget.model_validate(
            {
                "kind": kind_of(row)[0],
                "id": row.id,
                "label": label_of(row),
                "status": row.status,
                "deadSince": row.dead_at if row.status == DEAD else None,
                "deadReason": row.dead_reason if row.status == DEAD else None,
                "deadDetail": dead_detail(row) if row.status == DEAD else None,
                "lastSeenAt": seen,
                "createdAt": row.created_at,
                "recentDeliveries": latest.get(row.id, []),
            }
        )
        for row, seen in found
    ]


def kind_of(row: Any) -> tuple[str, str]:
    """The provider kind that delivers to the subscription or installation ``row``,
    and what the row is ("subscription" or "installation"), as sentences name it."""
    if hasattr(row, "endpoint"):
        return subscriptions_kind(), "subscription"
    return kind_for_platform(row.device_type), "installation"


def dead_detail(row: Any) -> str:
    """Why the dead subscription or installation ``row`` is never sent to again, as a
    sentence."""
    kind, what = kind_of(row)
    return outcomes.detail(
        "target_gone",
        service=service_name(kind),
        at=row.dead_at,
        target=what,
        answer=row.dead_reason or "no reason given",
    )
