"""Why a user did or did not get a message: one entry per target, with its
status, the machine reason, a sentence a person understands, and its timeline
(CONTRACT section 9). ``push.explain``, ``GET /messages/<id>/deliveries``, the
CLI's ``flask push explain`` and the console all read it from here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import outcomes, reports
from .activities import stamp_of
from .labels import app_label, browser_label
from .models import Models, recipient
from .schemas.delivery import DeliveryEntry

#: why a message has no delivery (to a user): deliveries are made at the send, one
#: per active target of its audience then
NO_DELIVERY = (
    "no browser or device of its audience was active when it was sent (a dead one is "
    "never sent to, and one registered later does not get it)"
)


#: how many of a user's left-out call's users its sentence names
NAMED_USERS = 5
#: how many earlier states of an activity are read back for the call that left a user
#: out; one left out further back is told the generic sentence
LOOKED_BACK = 200


@dataclass(frozen=True)
class LeftOut:
    """The call of activity ``activity_id`` that left a user out: when it was made,
    and its users."""

    activity_id: str
    at: datetime
    users: Sequence[str]


def why_empty(
    session: Any,
    models: Models,
    message_id: str,
    total: int,
    *,
    user_id: str | None = None,
    status: str | None = None,
    skipped: str = "skip",
) -> str:
    """:func:`why_none`, told (for a user with no delivery at all) the call of the
    message's activity that left them out, if one did."""
    left = None
    if not total and status is None and user_id is not None:
        left = left_out(session, models, message_id, user_id)
    return why_none(message_id, total, user_id=user_id, status=status, skipped=skipped, left=left)


def why_none(
    message_id: str,
    total: int,
    *,
    user_id: str | None = None,
    status: str | None = None,
    skipped: str = "skip",
    left: LeftOut | None = None,
) -> str:
    """Why a page of ``message_id``'s deliveries is empty, as a sentence: ``total``
    match its filters (``user_id``, ``status``) and the page skipped them all (said
    ``skipped``: ``--skip 20`` on the command line, ``skip=20`` over HTTP), or none
    does, and why: ``left``, the call of its activity that left ``user_id`` out.
    ``flask push explain`` and ``GET /messages/<id>/deliveries`` say it."""
    if total:
        such = "such delivery" if total == 1 else "such deliveries"
        return f"Message {message_id} has {total} {such}; {skipped} passed them all."
    if status is not None:
        whose = "" if user_id is None else f" to user {user_id}"
        return f"Message {message_id} has no {status} deliveries{whose}."
    if user_id is None:
        return f"Message {message_id} has no deliveries: {NO_DELIVERY}."
    if left is not None:
        # as the ``left_out`` sentence of an older state's push says it
        return (
            f"Message {message_id} has no deliveries to user {user_id}: a call of its "
            f"activity {left.activity_id} left them out at {outcomes.clock(left.at)} (an "
            f"activity's users are those of its latest call; that call's users: "
            f"{_named(left.users)}), so this state was not sent to them."
        )
    return (
        f"Message {message_id} has no deliveries to user {user_id}: they were not in its "
        "audience, or had no browser or device active when it was sent."
    )


def _named(users: Sequence[str]) -> str:
    """The first few of ``users``, and how many more: a call may name thousands."""
    if not users:
        return "none"
    more = len(users) - NAMED_USERS
    return ", ".join(users[:NAMED_USERS]) + (f" and {more} more" if more > 0 else "")


def _users_of(audience: Any) -> list[str] | None:
    """The users of an activity's call, from its message's audience; None for a
    catch-up's (one installation's), which no call made."""
    users = audience.get("users") if isinstance(audience, Mapping) else None
    return [str(user) for user in users] if isinstance(users, list) else None


def left_out(session: Any, models: Models, message_id: str, user_id: str) -> LeftOut | None:
    """The call of ``message_id``'s activity that left ``user_id`` out, when the
    message is a state of an activity they are not a user of but were in an earlier
    state: the call right after the latest state they were in. None otherwise (no
    activity's, a user in it who had no browser or device active, one never in it).

    Asked only of an empty page: the message's row (the session holds it already),
    then one query, of the audiences of the activity's earlier states, newest first."""
    m = models.Message
    message = session.get(m, message_id)
    if message is None or message.activity_id is None or not message.activity:
        return None
    users = _users_of(message.audience)
    if users is None or user_id in users:
        return None
    earlier = session.execute(
        sa.select(m.created_at, m.audience)
        .where(
            m.activity_id == message.activity_id,
            # the activity's own clock, which grows from one call to the next (a
            # catch-up repeats its state's)
            stamp_of(m) < int(message.activity["timestamp"]),
        )
        .order_by(stamp_of(m).desc(), m.created_at.desc())
        .limit(LOOKED_BACK)
    )
    # walking back: the call after the state being read is the one that left them out
    leaving = LeftOut(message.activity_id, message.created_at, users)
    for created_at, audience in earlier:
        called = _users_of(audience)
        if called is None:
            continue
        if user_id in called:
            return leaving
        leaving = LeftOut(message.activity_id, created_at, called)
    return None


def deliveries(
    session: Any,
    models: Models,
    message_id: str,
    *,
    user_id: str | None = None,
    status: str | None = None,
    skip: int = 0,
    take: int | None = None,
) -> tuple[int, list[DeliveryEntry]]:
    """How many deliveries of ``message_id`` match, and those of one page, oldest
    first, with their targets: two queries whatever the page's size."""
    d, sub, ins = models.Delivery, models.Subscription, models.Installation
    where: list[Any] = [d.message_id == message_id]
    if status is not None:
        where.append(d.status == status)
    sent_to = recipient(models)
    if user_id is not None:
        where.append(sent_to == user_id)

    def joined(select: sa.Select[Any]) -> sa.Select[Any]:
        return (
            select.select_from(d)
            .outerjoin(sub, sub.id == d.subscription_id)
            .outerjoin(ins, ins.id == d.installation_id)
            .where(*where)
        )

    total = session.scalar(joined(sa.select(sa.func.count()))) or 0
    page = joined(
        sa.select(d, sent_to, sub.id, sub.user_agent, ins.id, ins.device_type, ins.app_version)
    ).order_by(d.id)
    # rows this session read before (a cancel, a dispatch) are read afresh
    page = page.execution_options(populate_existing=True)
    if skip:
        page = page.offset(skip)
    if take is not None:
        page = page.limit(take)
    rows = session.execute(page).all()
    # a sentence that advises a retry says too when the message was cancelled since
    advised = any(row[0].reason in outcomes.RETRY_ADVISED for row in rows)
    stopped = advised and message_id in reports.cancelled(session, models, [message_id])
    entries = []
    for delivery, owner, sub_id, agent, ins_id, device, version in rows:
        if delivery.subscription_id is not None:
            label = browser_label(agent) if sub_id is not None else "Browser (deleted)"
        else:
            label = app_label(device, version) if ins_id is not None else "App (deleted)"
        entries.append(entry(delivery, owner, label, cancelled=stopped))
    return total, entries


def entry(
    delivery: Any, user_id: str | None, label: str, *, cancelled: bool = False
) -> DeliveryEntry:
    """One delivery row as the contract shows it; ``cancelled``: its message was."""
    events = list(delivery.events or ())
    return DeliveryEntry.model_validate(
        {
            "id": delivery.id,
            "target": {
                "kind": delivery.kind,
                "id": delivery.subscription_id or delivery.installation_id,
                "userId": user_id,
                "label": label,
            },
            "status": delivery.status,
            "reason": delivery.reason,
            "detail": outcomes.delivery_detail(delivery, cancelled=cancelled),
            "attempts": delivery.attempts,
            "nextAttemptAt": delivery.due_at if delivery.status == "queued" else None,
            "sentAt": delivery.sent_at,
            "clickedAt": delivery.clicked_at,
            "events": [_event(event) for event in events],
        }
    )


def _event(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored timeline entry as the API shows it (unknown keys are left out)."""
    return {
        "at": stored.get("at"),
        "what": stored.get("what"),
        "detail": stored.get("detail"),
        "statusCode": stored.get("statusCode"),
        "serviceId": stored.get("serviceId"),
        "nextAttemptAt": stored.get("nextAttemptAt"),
    }
