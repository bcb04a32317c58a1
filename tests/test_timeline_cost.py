"""A delivery's timeline costs no database round trip of its own on the fan-out path.

Statements are counted (SQLAlchemy's ``before_cursor_execute``; an executemany is one
round trip), never timed: the queued event rides in the fan-out's INSERT, the claim
reads the timeline with the row it loads anyway, and each outcome's events are
appended in the outcome's own executemany UPDATE.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import sqlalchemy as sa
from flask import Flask

from conftest import db, many_subscriptions, push, statements

BATCH = 500


def fan_out(n: int) -> tuple[int, Counter[str]]:
    """Send to ``n`` subscriptions and deliver through the real dispatcher; returns
    the round trips and how many of them were of each statement's start."""
    many_subscriptions(n)
    with statements() as seen:
        message = push.send(everyone=True, title="Sale")
        push.dispatch_due(message_id=message.id)
    d = push.models.Delivery
    rows = db.session.execute(sa.select(d.status, d.events).where(d.message_id == message.id)).all()
    assert len(rows) == n
    # every delivery has its whole story
    assert all(status == "sent" for status, _ in rows)
    assert all([e["what"] for e in events] == ["queued", "attempt", "sent"] for _, events in rows)
    return len(seen), Counter(seen)


def test_timelines_cost_no_round_trip_per_delivery(make_app: Callable[..., Flask]) -> None:
    app = make_app(PUSH_QUEUE="inline", PUSH_DELIVERY_BATCH=BATCH)
    with app.app_context():
        small, small_kinds = fan_out(2_000)
        large, large_kinds = fan_out(20_000)
    # 18,000 more deliveries: a handful of statements per batch of BATCH, not one
    # (or more) per delivery
    extra_batches = (20_000 - 2_000) // BATCH
    assert large - small <= 8 * extra_batches, (small_kinds, large_kinds)
    assert large < 20_000 // 50, large_kinds
    # and no statement of its own: what touches the timeline is the INSERT, the
    # claim's load and the outcome UPDATE, which the fan-out runs anyway
    assert set(large_kinds) == set(small_kinds)
