"""``push.explain``, ``push.cancel``, ``push.retry_failed``, ``push.user_targets``:
the operator's questions and actions as the facade offers them, answering the
contract's JSON shapes (camelCase keys), as the API does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import control, explain, policy, reports, targets, validation
from .errors import ValidationError
from .outcomes import STATUSES
from .schemas.errors import check
from .schemas.fields import Skip, Take, UserId

if TYPE_CHECKING:
    from .extension import PushState


def message_row(state: PushState, message_id: str) -> Any:
    """The message ``message_id``, or the API's not-found error as a ``ValidationError``."""
    # no stored id holds NUL or a lone surrogate, which the database could not even take
    storable = isinstance(message_id, str) and validation.storable(message_id)
    found = state.push.db.session.get(state.push.models.Message, message_id) if storable else None
    if found is None:
        raise ValidationError("No message with that id.", field="id", code="not_found")
    return found


def message_json(state: PushState, message: Any) -> dict[str, Any]:
    """The message as ``GET /messages/<id>`` answers it (without its problems)."""
    from .api.messages import message_of

    push = state.push
    counts = reports.message_counts(push.db.session, push.models, [message.id])[message.id]
    return message_of(message, counts).to_json()


def explain_message(
    state: PushState,
    message_id: str,
    user_id: str | None,
    *,
    status: str | None,
    skip: int,
    take: int | None,
) -> list[dict[str, Any]]:
    """``push.explain``: the filters checked as the API checks them, then one page."""
    return explain_page(state, message_id, user_id, status=status, skip=skip, take=take)[1]


def explain_page(
    state: PushState,
    message_id: str,
    user_id: str | None,
    *,
    status: str | None,
    skip: int,
    take: int | None,
) -> tuple[int, list[dict[str, Any]]]:
    """:func:`explain_message`, with how many deliveries match in all (a command
    that pages says where the next page starts)."""
    if user_id is not None:
        user_id = str(check(UserId, user_id, "userId"))
    if status is not None and status not in STATUSES:
        raise ValidationError(
            f"must be one of {', '.join(STATUSES)}", field="status", code="invalid_value"
        )
    skip = int(check(Skip, skip, "skip"))
    if take is not None:
        take = int(check(Take, take, "take"))
    message = message_row(state, message_id)
    push = state.push
    total, page = explain.deliveries(
        push.db.session,
        push.models,
        message.id,
        user_id=user_id,
        status=status,
        skip=skip,
        take=take,
    )
    return total, [entry.to_json() for entry in page]


def cancel(state: PushState, message_id: str) -> dict[str, Any]:
    """``push.cancel``: committed at once, so that workers see it."""
    message = message_row(state, message_id)
    session = state.push.db.session
    try:
        # before the cancel, which ends the lease of a push on the network too
        policy.release_capped(
            session,
            state.push.models,
            state.settings.categories,
            [message.id],
            cancelling=True,
        )
        ended = control.cancel(session, state.push.models, message.id)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    # counted as every other outcome written is, so that the metrics add up to the
    # counts (those in a worker's hand, the worker counts: control.cancel)
    if state.metrics is not None:
        state.metrics.count(ended)
    return message_json(state, message)


def retry_failed(state: PushState, message_id: str) -> dict[str, Any]:
    """``push.retry_failed``: committed, then handed to the app's queue; a cancelled
    message is refused (``message_cancelled``)."""
    message = message_row(state, message_id)
    session = state.push.db.session
    try:
        again, ended = control.retry_failed(
            session, state.push.models, state.settings.categories, message.id
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    if state.metrics is not None:
        state.metrics.count(ended)
    if again:
        state.get_queue().enqueue(message.id, again)
    return message_json(state, message)


def user_targets(state: PushState, user_id: str, recent: int) -> list[dict[str, Any]]:
    """``push.user_targets``, with ``recent`` from 0 to :data:`targets.MAX_RECENT`."""
    user_id = str(check(UserId, user_id, "userId"))
    if (
        isinstance(recent, bool)
        or not isinstance(recent, int)
        or not 0 <= recent <= targets.MAX_RECENT
    ):
        raise ValidationError(
            f"must be a whole number from 0 to {targets.MAX_RECENT}", field="recent"
        )
    push = state.push
    return [
        target.to_json()
        for target in targets.user_targets(push.db.session, push.models, user_id, recent=recent)
    ]
