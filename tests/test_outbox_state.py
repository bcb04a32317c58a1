"""push.outbox_state(): the due backlog, read from the database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from flask import Flask

from flask_push import OutboxState
from flask_push.models import utcnow

from conftest import db, push


def test_outbox_state_counts_due_queued_deliveries_only(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    with app.app_context():
        assert push.outbox_state() == OutboxState(due=0, oldest_due_seconds=None)
        now = utcnow()
        message = push.models.Message(audience={"users": ["x"]}, notification={"title": "t"})
        db.session.add(message)
        db.session.flush()
        rows = [
            ("queued", now - timedelta(seconds=90)),
            ("queued", now - timedelta(seconds=10)),
            ("queued", now + timedelta(hours=1)),  # scheduled: not due yet
            ("sent", now - timedelta(hours=2)),  # history
        ]
        for status, due in rows:
            db.session.add(
                push.models.Delivery(
                    message_id=message.id,
                    kind="webpush",
                    status=status,
                    due_at=due,
                    expires_at=now + timedelta(days=1),
                )
            )
        db.session.commit()
        state = push.outbox_state()
    assert state.due == 2
    assert state.oldest_due_seconds is not None
    assert 90 <= state.oldest_due_seconds < 3600
