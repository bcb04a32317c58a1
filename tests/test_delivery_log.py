"""No failure is silent: each delivery that fails, is gone or waits for a retry is a
line on the ``flask_push`` logger, naming the message, the target and what the push
service answered."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_push.models import utcnow
from flask_push.testing import FakePushService

from conftest import as_user, push


@pytest.fixture
def database(tmp_path: Any) -> dict[str, Any]:
    return {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.db'}"}


def test_each_undelivered_push_is_logged_with_its_target_and_reason(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    with FakePushService() as service:
        app = make_app(PUSH_QUEUE="inline", **service.app_config())
        client = app.test_client()
        fine, gone, refused, busy = (service.subscribe(name) for name in "abcd")
        for subscriber in (fine, gone, refused, busy):
            answer = client.post("/push/subscriptions", json=subscriber.info, headers=as_user("al"))
            assert answer.status_code == 201
        gone.expire()
        service.fail_next(400, subscriber=refused)
        service.fail_next(503, subscriber=busy, retry_after=600)
        with app.app_context(), caplog.at_level(logging.INFO, logger="flask_push"):
            message = push.send(users=["al"], title="Order #42")
    lines = {r.getMessage(): r.levelno for r in caplog.records if r.name == "flask_push"}
    [failed] = [m for m in lines if " failed: " in m]
    [dead] = [m for m in lines if " gone: " in m]
    [retry] = [m for m in lines if " will be retried in " in m]
    assert lines[failed] == logging.WARNING
    assert lines[dead] == lines[retry] == logging.INFO
    for line, subscriber in ((failed, refused), (dead, gone), (retry, busy)):
        assert message.id in line and "webpush http://127.0.0.1:" in line
        assert subscriber.endpoint[-8:] in line  # the target, by the end of its endpoint
    assert "400 " in failed and "503 " in retry and "410 " in dead
    assert fine.endpoint[-8:] not in " ".join(lines)  # what arrived is not logged


def test_a_delivery_decided_without_sending_is_logged(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    with FakePushService() as service:
        app = make_app(PUSH_QUEUE="inline", **service.app_config())
        client = app.test_client()
        client.post("/push/subscriptions", json=service.subscribe().info, headers=as_user("al"))
        with app.app_context(), caplog.at_level(logging.INFO, logger="flask_push"):
            later = utcnow() + timedelta(hours=1)
            message = push.send(users=["al"], title="Tonight only", send_at=later)
            message_id = message.id
            # its time came while no worker ran, and its ttl ran out meanwhile
            d = push.models.Delivery
            push.db.session.execute(
                sa.update(d)
                .where(d.message_id == message.id)
                .values(due_at=utcnow(), expires_at=utcnow())
            )
            push.db.session.commit()
            push.dispatch_due()
    [line] = [r for r in caplog.records if "without being sent" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert line.getMessage().endswith(
        f"of {message_id} expired without being sent: its time to live ran out before it "
        "could be sent"
    )
    assert service.requests == []
