"""Delivery through the outbox: the real providers against the local fakes."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_push import dispatch, scheduled_inbox, signals
from flask_push.dispatch import Dispatcher, backoff, read_click_token
from flask_push.models import ACTIVE, DEAD, utcnow
from flask_push.queues import ThreadWorker
from flask_push.testing import FakeFCM, FakePushService
from flask_push.testing.fcm import make_registration_token

from conftest import SENDING_SECRET as SECRET
from conftest import as_user, db, later, make_due, push, subscribe, wait_until

#: a browser's P-256 key, for subscriptions that are never really sent to
BROWSER_P256DH = (
    "BPbPsuY1g6EjcpHqzgs3jtGrs6M4-oXpBqXhdqpFL3ehjO3CaTjqWPF0jdbbC8A9VhDuU7Vn9zj6R7hRdVvZCjE"
)


def rows(message_id: str) -> list[Any]:
    model = push.models.Delivery
    query = sa.select(model).where(model.message_id == message_id).order_by(model.id)
    return list(db.session.scalars(query.execution_options(populate_existing=True)))


def add_android(token: str) -> None:
    """An Android installation of alice's, with an FCM registration token."""
    db.session.add(
        push.models.Installation(
            app_id="shop", device_token=token, device_type="android", user_id="alice"
        )
    )
    db.session.commit()


def test_an_app_that_sends_without_a_secret_key_says_so_once(
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without a SECRET_KEY (an API-only host, with tokens and no sessions) the pushes
    carry no click token, so the service worker reports no click and ``clicked``
    stays 0: said once, when this process first sends, not a word per push."""
    caplog.set_level("WARNING", logger="flask_push")

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "SECRET_KEY" in r.getMessage()]

    subscriber = push_fake_webpush.subscribe()
    keyless = sending_app(SECRET_KEY=None)
    with keyless.app_context():
        subscribe(subscriber)
        for _ in range(2):
            push.send(users=["alice"], title="Hello")
    assert [("clickToken" in r.json()) for r in subscriber.received] == [False, False]
    assert said() == [
        "flask-push: this app has no SECRET_KEY, so the notifications this process sends "
        "carry no click token and no click on them is counted (clicked stays 0). Set "
        "SECRET_KEY: the same in every process that sends and in the web app, which "
        "checks the tokens."
    ]
    caplog.clear()
    keyed, other = sending_app(), push_fake_webpush.subscribe()
    with keyed.app_context():
        db.session.execute(sa.delete(push.models.Subscription))  # the same tables
        subscribe(other)
        push.send(users=["alice"], title="Hello")
    assert "clickToken" in other.received[-1].json() and said() == []


def test_inline_delivers_web_push_and_fcm(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    app = sending_app()
    subscriber = push_fake_webpush.subscribe()
    token = make_registration_token()
    with app.app_context():
        subscribe(subscriber)
        add_android(token)
        succeeded: list[Any] = []

        def on_success(sender: Any, push: Any, result: Any) -> None:
            succeeded.append(result.provider)

        with signals.delivery_succeeded.connected_to(on_success, sender=app):
            message = push.send(
                users=["alice"],
                title="Order #42",
                body="Out for delivery",
                url="/orders/42",
                data={"orderId": 42},
                ttl=3600,
                urgency="high",
                collapse_key="order-42",
            )
        assert sorted(succeeded) == ["fcm", "webpush"]
        assert {row.status for row in rows(message.id)} == {"sent"}
        # what push.send returned says what GET /messages/<id> says, not "queued"
        assert message.status == "done"
        assert all(row.attempts == 1 and row.lease_until is None for row in rows(message.id))

    [received] = subscriber.received
    payload = received.json()
    assert payload["title"] == "Order #42"
    assert payload["body"] == "Out for delivery"
    assert payload["url"] == "/orders/42"
    assert payload["data"] == {"orderId": 42}
    assert payload["messageId"] == message.id
    assert received.ttl <= 3600 and received.urgency == "high"
    assert received.topic == "order-42"
    webpush_row = next(r for r in rows_outside(app, message.id) if r.kind == "webpush")
    assert read_click_token(SECRET, payload["clickToken"]) == (webpush_row.id, message.id)
    assert read_click_token("other-secret", payload["clickToken"]) is None

    [sent] = push_fake_fcm.messages
    assert sent.token == token
    assert sent.notification == {"title": "Order #42", "body": "Out for delivery"}
    assert sent.data is not None and sent.data["messageId"] == message.id


def test_what_a_service_says_is_kept_in_printable_words_with_its_batch(
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    push_fake_fcm: FakeFCM,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # FCM's JSON error may hold NUL (which PostgreSQL refuses in text) and escape
    # sequences (which a terminal runs): one such outcome failed the write of its
    # whole batch, which was then sent again at every lease, the Web Push too.
    app = sending_app()
    subscriber = push_fake_webpush.subscribe()
    token = make_registration_token()
    push_fake_fcm.fail_next(
        400, "INVALID_ARGUMENT", message="bad\x00token \x1b[31mred\ud800\n  sent \u202edenifed"
    )
    with app.app_context():
        subscribe(subscriber)
        add_android(token)
        message = push.send(users=["alice"], title="Hello")
        by_kind = {row.kind: row for row in rows(message.id)}
    assert by_kind["webpush"].status == "sent" and len(subscriber.received) == 1
    failed = by_kind["fcm"]
    assert failed.status == "failed" and failed.lease_until is None
    assert failed.error is not None
    assert "bad\\x00token \\x1b[31mred\\ud800\n  sent \\u202edenifed" in failed.error
    assert not {"\x00", "\x1b", "\u202e"} & set(caplog.text)
    # a line of the log is a line: the service's newline is written out there
    assert "\\ud800\\n  sent \\u202edenifed" in caplog.text


def rows_outside(app: Flask, message_id: str) -> list[Any]:
    with app.app_context():
        return rows(message_id)


def test_gone_kills_the_subscription(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    app = sending_app()
    subscriber = push_fake_webpush.subscribe()
    subscriber.expire()
    gone: list[tuple[str, str]] = []

    def on_gone(sender: Any, kind: str, target_id: str, reason: str) -> None:
        gone.append((kind, target_id))

    with app.app_context(), signals.subscription_gone.connected_to(on_gone, sender=app):
        sub = subscribe(subscriber)
        message = push.send(users=["alice"], title="x")
        [row] = rows(message.id)
        assert row.status == "gone" and "410" in row.error
        db.session.refresh(sub)
        assert sub.status == DEAD and "410" in sub.dead_reason and sub.dead_at is not None
        assert gone == [("subscription", sub.id)]
        again = push.send(users=["alice"], title="y")
        assert again.recipient_count == 0 and rows(again.id) == []
    assert len(push_fake_webpush.requests) == 1


def test_rate_limit_retries_later_then_gives_up(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    app = sending_app()
    subscriber = push_fake_webpush.subscribe()
    push_fake_webpush.fail_next(429, retry_after=120, times=3)
    failed: list[bool] = []

    def on_failed(sender: Any, push: Any, result: Any, will_retry: bool) -> None:
        failed.append(will_retry)

    with app.app_context(), signals.delivery_failed.connected_to(on_failed, sender=app):
        sub = subscribe(subscriber)
        before = utcnow()
        message = push.send(users=["alice"], title="x")
        [row] = rows(message.id)
        assert row.status == "queued" and row.attempts == 1 and "429" in row.error
        assert row.due_at >= before + timedelta(seconds=120)
        assert push.dispatch_due() == 0  # not due yet

        dispatcher = Dispatcher(app, push.models, db.engine, push.settings, max_attempts=2)
        try:
            make_due(message.id)
            assert dispatcher.run_once() == 1
            [row] = rows(message.id)
            assert row.status == "failed" and row.attempts == 2
            assert "gave up after 2 attempts" in row.error and "429" in row.error
        finally:
            dispatcher.close()
        db.session.refresh(sub)
        assert sub.status == ACTIVE
    assert failed == [True, False]
    assert subscriber.received == []


@contextmanager
def claims_lost(app: Flask, subscriber: Any, lost: int) -> Iterator[tuple[Dispatcher, str]]:
    """A message to ``subscriber``'s browser whose delivery was claimed ``lost``
    times by workers that were gone before sending (claimed and committed, nothing
    written), and is due again; with a dispatcher that tries 3 times."""
    with app.app_context():
        dispatcher = Dispatcher(app, push.models, db.engine, push.settings, max_attempts=3)
    try:
        with app.app_context():
            subscribe(subscriber)
            message = push.send(users=["alice"], title="x", send_at=utcnow() + timedelta(hours=1))
            for _ in range(lost):
                make_due(message.id, lease_until=None)
                assert dispatcher._claim_and_load(None, 100).pushes
            make_due(message.id, lease_until=None)
            yield dispatcher, message.id
    finally:
        dispatcher.close()


def test_a_delivery_whose_claims_never_end_is_given_up(
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker that dies each time it holds a delivery (a push that crashes it, say)
    writes no outcome: once the delivery has been claimed as often as it may be tried,
    the next claim fails it with the reason instead of handing it out forever."""
    app = sending_app()
    with claims_lost(app, push_fake_webpush.subscribe(), 3) as (dispatcher, message_id):
        with caplog.at_level(logging.WARNING, logger="flask_push"):
            assert dispatcher.run_once() == 1
        [row] = rows(message_id)
        assert (row.status, row.reason, row.attempts) == ("failed", "no_outcome", 4)
        assert row.error == (
            "gave up at claim 4: the last claims before it ended with no outcome written"
        )
        detail = row.events[-1]["detail"]
        assert "at its claim number 4: the last claims before it" in detail
        assert [e["what"] for e in row.events] == ["queued", *["attempt"] * 3, "failed"]
        assert f"delivery {row.id} of {message_id} failed without being sent" in caplog.text
        page = app.test_client().get(
            f"/push/messages/{message_id}/deliveries", headers=as_user("ops", admin=True)
        )
        [item] = page.get_json()["items"]
        assert item["reason"] == "no_outcome" and item["detail"] == detail
    assert push_fake_webpush.requests == []


def test_a_delivery_claimed_fewer_times_than_it_may_be_tried_is_still_sent(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    subscriber = push_fake_webpush.subscribe()
    with claims_lost(sending_app(), subscriber, 2) as (dispatcher, message_id):
        assert dispatcher.run_once() == 1
        [row] = rows(message_id)
        assert (row.status, row.attempts) == ("sent", 3)
        # the claims that wrote nothing are in the timeline, as attempts counts them,
        # saying the push may have gone out (a worker killed after its POST)
        attempts = [e["detail"] for e in row.events if e["what"] == "attempt"]
        assert [e["what"] for e in row.events] == [
            "queued",
            "attempt",
            "attempt",
            "attempt",
            "sent",
        ]
        for number in (1, 2):
            assert attempts[number - 1] == (
                f"Attempt {number}: no outcome was written: the worker that claimed it "
                "stopped (or lost its database) first. The push may have reached the "
                "browser's push service all the same, and then shows twice."
            )
        assert attempts[2].startswith("Attempt 3: the browser's push service answered 201")
    assert len(subscriber.received) == 1


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    first = [backoff(1) for _ in range(50)]
    assert all(5 <= d <= 10 for d in first) and len(set(first)) > 1
    assert all(40 <= backoff(4) <= 80 for _ in range(50))
    assert backoff(1, retry_after=300) == 300
    assert backoff(40) <= 3600


def test_expired_delivery_is_not_sent(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    app = sending_app()
    subscriber = push_fake_webpush.subscribe()
    with app.app_context():
        subscribe(subscriber)
        message = push.send(
            users=["alice"], title="x", ttl=60, send_at=utcnow() + timedelta(minutes=5)
        )
        # the worker was down for longer than the ttl
        make_due(message.id, expires_at=utcnow() - timedelta(seconds=1))
        assert push.dispatch_due() == 1
        [row] = rows(message.id)
        assert row.status == "expired" and "time to live" in row.error
    assert push_fake_webpush.requests == []


def test_thread_queue_delivers_in_the_background(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    app = sending_app(PUSH_QUEUE="thread")
    subscriber = push_fake_webpush.subscribe()
    with app.app_context():
        subscribe(subscriber)
        message = push.send(users=["alice"], title="Background")
        [received] = subscriber.wait(1)
        assert received.json()["messageId"] == message.id
        deadline = time.monotonic() + 5
        while rows(message.id)[0].status != "sent" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rows(message.id)[0].status == "sent"
        worker = app.extensions["push"].worker
        assert worker is not None and worker.alive
        push.shutdown()
        assert not worker.alive
    assert not [t for t in threading.enumerate() if t.name.startswith("flask-push-worker")]


def test_an_inline_send_that_a_shutdown_overtakes_still_delivers(
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """push.shutdown() on another thread (a worker process ending, a test's teardown)
    closes the inline queue's dispatcher between a send's taking it and its round:
    the send, committed, raised "this dispatcher is closed" to its caller, who would
    send it again. It goes out with a fresh dispatcher, as a send after the shutdown
    does."""
    app = sending_app(PUSH_QUEUE="inline")
    subscriber = push_fake_webpush.subscribe()
    run_until_idle = Dispatcher.run_until_idle
    overtaken: list[bool] = []

    def shut_down_first(self: Dispatcher, **kwargs: Any) -> int:
        if not overtaken:
            overtaken.append(True)

            def shutdown() -> None:
                with app.app_context():
                    push.shutdown()

            other = threading.Thread(target=shutdown)
            other.start()
            other.join()
        return run_until_idle(self, **kwargs)

    monkeypatch.setattr(Dispatcher, "run_until_idle", shut_down_first)
    with app.app_context():
        subscribe(subscriber)
        message = push.send(users=["alice"], title="Hi")
        assert overtaken
        assert rows(message.id)[0].status == "sent"
    [received] = subscriber.wait(1)
    assert received.json()["messageId"] == message.id
    with app.app_context():
        push.shutdown()


def test_a_process_that_serves_requests_delivers_what_it_did_not_send(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """The web server restarted, or a script queued the message and ended: its
    first request starts the worker thread, which finds the message due."""
    app = sending_app(PUSH_QUEUE="thread")
    subscriber = push_fake_webpush.subscribe()
    with app.app_context():
        subscribe(subscriber)
        message = push.send(users=["alice"], title="Scheduled", send_at=later()).id
        push.shutdown()  # the process that sent it has ended
        make_due(message)
    assert app.extensions["push"].worker is None
    app.test_client().get("/push/vapid-public-key")  # any request of the app's
    [received] = subscriber.wait(1, timeout=10)
    assert received.json()["messageId"] == message
    with app.app_context():
        push.shutdown()


def test_only_the_thread_queue_starts_a_worker_on_a_request(
    sending_app: Callable[..., Flask],
) -> None:
    for config in ({"PUSH_QUEUE": "inline"}, {"PUSH_QUEUE": "thread", "PUSH_SUPPRESS_SEND": True}):
        app = sending_app(**config)
        assert app.test_client().get("/push/vapid-public-key").status_code == 200
        assert app.extensions["push"].worker is None, config


def test_a_request_is_served_when_no_worker_thread_can_start(
    sending_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = sending_app(PUSH_QUEUE="thread")

    def refused(self: Any) -> None:
        raise RuntimeError("can't start new thread")

    client = app.test_client()
    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", refused)
        for _ in range(2):
            assert client.get("/push/vapid-public-key").status_code == 200
    said = [r for r in caplog.records if "could not start its worker thread" in r.getMessage()]
    assert len(said) == 1 and "can't start new thread" in said[0].getMessage()  # once


def test_the_thread_queue_writes_a_scheduled_messages_inbox_items_when_it_comes_due(
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No one calls dispatch_due: the worker's polling finds the items that came due,
    bob's too, who has no browser, and announces them, on the signal and live."""
    app = sending_app(PUSH_QUEUE="thread")
    subscriber = push_fake_webpush.subscribe()
    saved: list[str] = []
    published: list[tuple[str, str, Any]] = []
    realtime = app.extensions["push"].get_realtime()
    monkeypatch.setattr(
        realtime, "publish", lambda channel, event, data: published.append((channel, event, data))
    )

    def on_saved(sender: Any, item: Any, created: bool) -> None:
        saved.append(item.user_id)

    with app.app_context(), signals.inbox_item_saved.connected_to(on_saved, sender=app):
        subscribe(subscriber)
        send_at = utcnow() + timedelta(seconds=1.5)
        message = push.send(users=["alice", "bob"], title="Sale", inbox=True, send_at=send_at)
        assert push.search("alice").total_count == 0 and saved == []
        [received] = subscriber.wait(1, timeout=10)
        assert received.json()["messageId"] == message.id
        deadline = time.monotonic() + 10
        while len(saved) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(saved) == ["alice", "bob"]
        for user in ("alice", "bob"):
            [item] = push.search(user).items
            assert item.id == message.id and item.created_at >= send_at
            live = [(event, data) for to, event, data in published if to == f"user:{user}"]
            assert [event for event, _ in live] == ["notification", "unread"]
            assert live[0][1]["id"] == message.id and live[1][1] == {"count": 1}
        push.shutdown()


def an_inbox_item_and_a_push_due() -> tuple[Any, Any]:
    """Two scheduled messages, come due: bob's inbox item (he has no browser), and a
    push to alice's browser. Returns both messages."""
    held = push.send(users=["bob"], title="Sale", inbox=True, send_at=later())
    make_due(held.id)
    order = push.send(users=["alice"], title="Order", send_at=later())
    make_due(order.id)
    return held, order


def test_held_inbox_items_never_hold_back_deliveries(
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The inbox items run on a thread of their own: announcements that hang (a
    receiver, a backplane that does not answer) and writes that fail leave the
    claims, sends and outcomes of every message as they were; a failure is said
    once."""
    app = sending_app()
    subscriber = push_fake_webpush.subscribe()
    held = threading.Event()

    def hanging(sender: Any, item: Any, created: bool) -> None:
        held.wait(30)

    with app.app_context(), signals.inbox_item_saved.connected_to(hanging, sender=app):
        subscribe(subscriber)
        _, now = an_inbox_item_and_a_push_due()
        dispatcher = push.state.make_dispatcher()
        try:
            assert dispatcher.run_until_idle() == 1  # while the announcement hangs
            assert rows(now.id)[0].status == "sent"
            assert subscriber.wait(1)
            # written (on its own thread, beside the round: maybe after it), announcing
            assert wait_until(lambda: push.search("bob").total_count == 1)
            held.set()
            dispatcher.settle_inbox(timeout=10)

            # a write that fails: said once, and the deliveries go on
            def broken(*args: Any) -> Any:
                raise RuntimeError("the inbox writer is broken")

            monkeypatch.setattr(scheduled_inbox, "write_due", broken)
            for n in range(3):
                again = push.send(users=["alice"], title=f"Order {n}", send_at=later())
                make_due(again.id)
                assert dispatcher.run_until_idle() == 1
                with pytest.raises(RuntimeError, match="the inbox writer is broken"):
                    dispatcher.settle_inbox(timeout=10)  # as dispatch_due() raises it
                assert rows(again.id)[0].status == "sent"
        finally:
            held.set()
            dispatcher.close()
    said = [r.getMessage() for r in caplog.records if "inbox items" in r.getMessage()]
    assert said == [
        "flask-push: the inbox items of scheduled messages that came due could not be "
        "written (the inbox writer is broken); they stay held, and are tried again about "
        "every 1 s"
    ]


def test_inbox_tables_an_older_flask_push_made_are_said_and_raised(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """The claims never touch the inbox's tables, so the writer says it itself: a
    warning with what to run, and dispatch_due() and `flask push worker --once` fail
    with it. The items stay held."""
    app = make_app(PUSH_QUEUE="inline")
    with app.app_context():
        message = push.send(users=["bob"], title="Sale", inbox=True, send_at=later())
        make_due(message.id)
        with db.engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE push_inbox_items DROP COLUMN progress"))
        with pytest.raises(sa.exc.DBAPIError):
            push.dispatch_due()
    said = [r for r in caplog.records if "inbox items" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING]
    assert "push_inbox_items.progress missing" in said[0].getMessage()
    assert "flask db upgrade heads" in said[0].getMessage()
    result = app.test_cli_runner().invoke(args=["push", "worker", "--once"])
    assert result.exit_code == 1, result.output
    assert "push_inbox_items.progress missing" in result.output
    with app.app_context():
        held = push.models.ScheduledInboxItem
        assert db.session.scalar(sa.select(sa.func.count()).select_from(held)) == 1


def test_no_thread_for_the_inbox_items_leaves_delivery_and_closing_as_they_were(
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At interpreter exit (Python 3.12) or at a thread limit, a thread cannot start:
    the look waits for the next round, and the dispatcher still closes."""

    class Refused(threading.Thread):
        def start(self) -> None:
            if self.name == "flask-push-inbox":
                raise RuntimeError("can't create new thread at interpreter shutdown")
            super().start()

    subscriber = push_fake_webpush.subscribe()
    app = sending_app()
    with app.app_context():
        subscribe(subscriber)
        _, order = an_inbox_item_and_a_push_due()
        dispatcher = push.state.make_dispatcher()
        monkeypatch.setattr(threading, "Thread", Refused)
        assert dispatcher.run_until_idle() == 1
        dispatcher.settle_inbox()
        dispatcher.close()
        assert dispatcher.closed and dispatcher._loop.is_closed()
        assert rows(order.id)[0].status == "sent" and push.search("bob").total_count == 0


def test_a_sweep_beside_busy_tasks_delivers_a_batch_a_round_and_yields_when_they_start(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """The sweep of a ``flask push worker`` on the celery queue yields to the tasks
    running in its process: one batch a round while they run, and a round that is
    under way stops once they start; on its own it delivers everything due."""
    app = sending_app(PUSH_DELIVERY_BATCH=10)
    with app.app_context():
        for i in range(35):
            subscribe(push_fake_webpush.subscribe(f"browser-{i}"), f"user-{i}")
        message = push.send(everyone=True, title="Sale", send_at=utcnow() + timedelta(hours=1))
        make_due(message.id)

        def sweep(yield_to: Callable[[], bool] | None) -> ThreadWorker:
            return ThreadWorker(app, push.state.make_dispatcher, yield_to)

        dispatcher = push.state.make_dispatcher()
        try:
            # tasks run beside it: one batch, then wait for the next poll
            assert sweep(lambda: True).run_round(dispatcher) is False
            assert Counter(row.status for row in rows(message.id)) == {"sent": 10, "queued": 25}
            # a task starts once the round has claimed its first batch: the round
            # lets what is on the network finish and claims no more
            asked = []

            def task_started() -> bool:
                asked.append(True)
                return len(asked) > 2  # run_round's look, the first turn's, then busy

            sweep(task_started).run_round(dispatcher)
            counts = Counter(row.status for row in rows(message.id))
            assert counts["queued"] >= 15 and counts["sent"] == 35 - counts["queued"]
            # ... and what it claimed and did not send is free for the tasks at once
            assert all(
                row.lease_until is None for row in rows(message.id) if row.status == "queued"
            )
            # on its own, it delivers all that is due
            alone = sweep(None)
            assert alone.run_round(dispatcher) is True
            assert alone.run_round(dispatcher) is False
            assert Counter(row.status for row in rows(message.id)) == {"sent": 35}
        finally:
            dispatcher.close()


def test_record_captures_suppressed_sends(make_app: Callable[..., Flask]) -> None:
    app = make_app(PUSH_QUEUE="inline")  # testing: sends are suppressed
    with app.app_context():
        sub = push.models.Subscription(
            endpoint="https://fcm.googleapis.com/fcm/send/abc",
            p256dh="BPbPsuY1g6EjcpHqzgs3jtGrs6M4-oXpBqXhdqpFL3ehjO3CaTjqWPF0jdbbC8A9VhDuU7Vn9zj"
            "6R7hRdVvZCjE",
            auth="mF2g8NrscYnb3g5GAhQ1YQ",
            user_id="alice",
            topics=[],
        )
        db.session.add(sub)
        db.session.commit()
        succeeded: list[str] = []

        def on_success(sender: Any, push: Any, result: Any) -> None:
            succeeded.append(push.delivery_id)

        with (
            push.record() as outbox,
            signals.delivery_succeeded.connected_to(on_success, sender=app),
        ):
            message = push.send(users=["alice"], title="Hi", body="there")
        [recorded] = outbox
        assert recorded.message_id == message.id
        assert recorded.notification.title == "Hi"
        assert recorded.target.endpoint == sub.endpoint  # type: ignore[union-attr]
        [row] = rows(message.id)
        assert row.status == "sent" and succeeded == [str(row.id)]
        # outside the block nothing more is collected
        push.send(users=["alice"], title="later")
        assert len(outbox) == 1


def test_concurrent_dispatchers_never_send_twice(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    app = sending_app()
    push_fake_webpush.delay = 0.01
    subscribers = [push_fake_webpush.subscribe() for _ in range(24)]
    with app.app_context():
        for subscriber in subscribers:
            subscribe(subscriber)
        message_id = push.send(users=["alice"], title="x", send_at=utcnow() + timedelta(hours=1)).id
        make_due(message_id)
        dispatchers = [
            Dispatcher(app, push.models, db.engine, push.settings, batch_size=3) for _ in range(2)
        ]
    claimed: list[int] = []
    start = threading.Barrier(2)
    # Each one's first claim waits for the other's: one starved thread would
    # otherwise see the other take every batch before it claims at all.
    first_claims = threading.Barrier(2, timeout=30)
    for dispatcher in dispatchers:
        dispatcher._claim_and_load = _then_wait(dispatcher._claim_and_load, first_claims)  # type: ignore[method-assign]

    def work(dispatcher: Dispatcher) -> None:
        with app.app_context():
            start.wait()
            claimed.append(dispatcher.run_until_idle())

    threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for dispatcher in dispatchers:
        dispatcher.close()
    assert sum(claimed) == 24
    assert all(count > 0 for count in claimed), claimed  # both sent, side by side
    counts = Counter(push.subscriber_id for push in push_fake_webpush.pushes)
    assert sorted(counts.values()) == [1] * 24
    with app.app_context():
        assert {row.status for row in rows(message_id)} == {"sent"}


def test_a_database_that_does_not_answer_is_said_while_it_waits(
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A query on a connection whose server vanished can wait for many minutes
    # without an error; the leases of what is in hand run out meanwhile.
    app = sending_app()
    subscriber = push_fake_webpush.subscribe()
    with app.app_context():
        subscribe(subscriber)
        later = utcnow() + timedelta(hours=1)
        message_id = push.send(users=["alice"], title="x", send_at=later).id
        make_due(message_id)
        dispatcher = Dispatcher(
            app, push.models, db.engine, push.settings, lease=timedelta(seconds=1)
        )
    said = threading.Event()
    claim = dispatcher._claim_and_load

    def slow_claim(*args: Any) -> Any:
        assert said.wait(10)  # answers once the wait was said
        return claim(*args)

    class Said(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "has not answered" in record.getMessage():
                said.set()

    dispatcher._claim_and_load = slow_claim  # type: ignore[method-assign]
    watcher = Said()
    logging.getLogger("flask_push").addHandler(watcher)
    try:
        with caplog.at_level(logging.INFO, logger="flask_push"), app.app_context():
            assert dispatcher.run_until_idle() == 1
    finally:
        logging.getLogger("flask_push").removeHandler(watcher)
        dispatcher.close()
    # (the first: on a busy machine another job may also take half a lease)
    waiting = next(r for r in caplog.records if "has not answered" in r.getMessage())
    assert waiting.levelno == logging.WARNING
    assert (
        "flask-push: the database has not answered for 0.5 s; the leases of the deliveries "
        "in hand run out after 1 s, and another worker may then send them again"
        == waiting.getMessage()
    )
    assert "the database answered after" in caplog.text
    assert len(subscriber.received) == 1


@pytest.mark.parametrize("refused", ["their words", "the whole outcome"])
def test_an_outcome_the_database_refuses_does_not_hold_back_the_others(
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    refused: str,
) -> None:
    # One push service's words that the database refuses failed the write of the
    # whole batch, and every push of it, sent, was sent again at every lease. Now
    # the others are kept, and that outcome without those words. An outcome that
    # fails even so is a bug: the round fails, as it did.
    app = sending_app()
    # the three outcomes are written together, once all have come, however slowly
    # they come on a busy machine (else the batch that fails is not all of them)
    monkeypatch.setattr(dispatch, "FLUSH_EVERY", 3600.0)
    subscribers = [push_fake_webpush.subscribe() for _ in range(3)]
    with app.app_context():
        for subscriber in subscribers:
            subscribe(subscriber)
        later = utcnow() + timedelta(hours=1)
        message_id = push.send(users=["alice"], title="x", send_at=later).id
        make_due(message_id)
        poisoned = rows(message_id)[1].id
        dispatcher = Dispatcher(app, push.models, db.engine, push.settings)
    record = dispatcher._record

    def refusing(session: Any, decided: Any, results: Any, *args: Any) -> Any:
        for push_, result in results:
            if int(push_.delivery_id) == poisoned and (
                result.service_id is not None or refused == "the whole outcome"
            ):
                raise ValueError("a value the database refuses")
        return record(session, decided, results, *args)

    dispatcher._record = refusing  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.INFO, logger="flask_push"), app.app_context():
            if refused == "their words":
                assert dispatcher.run_until_idle() == 3
            else:
                with pytest.raises(ValueError, match="a value the database refuses"):
                    dispatcher.run_until_idle()
            by_id = {row.id: row for row in rows(message_id)}
    finally:
        dispatcher.close()
    assert "writing 3 outcomes failed (a value the database refuses)" in caplog.text
    row = by_id.pop(poisoned)
    if refused == "their words":
        assert [(r.status, r.lease_until) for r in by_id.values()] == [("sent", None)] * 2
        assert (row.status, row.lease_until, row.service_id) == ("sent", None, None)
        assert (
            f"the push service's words for delivery {poisoned} could not be kept (a value "
            "the database refuses); its outcome is kept without them"
        ) in caplog.text
    else:
        assert row.status == "queued" and row.lease_until is not None  # back after it
        # the others are kept even so: the failed round writes them one by one too
        assert [(r.status, r.lease_until) for r in by_id.values()] == [("sent", None)] * 2
        assert (
            f"could not write the outcome of delivery {poisoned} after a failed round (a "
            "value the database refuses); it is sent again once its lease runs out"
        ) in caplog.text
    assert sum(len(s.received) for s in subscribers) == 3  # nothing sent twice


def test_an_outcome_for_a_row_the_round_no_longer_holds_is_said_not_written(
    sending_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    # Should a bug ever let a second send of a row finish after the row was written
    # (as a round that claimed its own rows again did), its outcome, which has no
    # attempt left to be written with, failed the write of all the others with it.
    from flask_push.dispatch import _Held, _Round
    from flask_push.message import DeliveryResult

    app = sending_app()
    with app.app_context():
        dispatcher = Dispatcher(app, push.models, db.engine, push.settings)
    try:
        webpush = dispatcher.providers["webpush"]

        async def finish() -> _Round:
            r = _Round()
            held = _Held(7, push=None, provider=webpush, lane="x")  # type: ignore[arg-type]
            r.unfinished = 1
            done = asyncio.get_running_loop().create_future()
            done.set_result(DeliveryResult("7", "sent", "webpush"))
            dispatcher._finished(r, held, "webpush", done)  # type: ignore[arg-type]
            return r

        r = dispatcher._loop.run_until_complete(finish())
    finally:
        dispatcher.close()
    assert r.unfinished == 0 and len(r.pending) == 0
    assert (
        "an outcome came for delivery 7, which this worker no longer holds; it is not written"
        in caplog.text
    )


def test_closing_while_a_database_job_runs_ends_its_thread_cleanly(
    sending_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A round's lease renewal can still be on the database thread when the round is
    # over and the dispatcher closes: its result has a loop to go to, not a crash.
    app = sending_app()
    with app.app_context():
        dispatcher = Dispatcher(app, push.models, db.engine, push.settings)
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    started, release = threading.Event(), threading.Event()

    def renewal() -> int:
        started.set()
        release.wait(5)
        return 1

    async def leave_it_running() -> None:
        dispatcher._db.run(renewal)  # not awaited: its task was cancelled

    dispatcher._loop.run_until_complete(leave_it_running())
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    dispatcher.close()
    assert crashed == []


def _then_wait(claim: Callable[..., Any], barrier: threading.Barrier) -> Callable[..., Any]:
    """``claim``, whose first call waits at ``barrier`` once it has claimed."""
    calls: list[None] = []

    def claim_then_wait(*args: Any) -> Any:
        claimed = claim(*args)
        if not calls:
            calls.append(None)
            barrier.wait()
        return claimed

    return claim_then_wait


def test_rows_whose_target_died_or_message_went_are_not_sent(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(PUSH_QUEUE="inline")  # suppressed: the memory provider
    with app.app_context():
        subs = []
        for user in ("alice", "bob"):
            sub = push.models.Subscription(
                endpoint=f"https://fcm.googleapis.com/fcm/send/{user}",
                p256dh="BPbPsuY1g6EjcpHqzgs3jtGrs6M4-oXpBqXhdqpFL3ehjO3CaTjqWPF0jdbbC8A9VhDuU7Vn9"
                "zj6R7hRdVvZCjE",
                auth="mF2g8NrscYnb3g5GAhQ1YQ",
                user_id=user,
                topics=[],
            )
            db.session.add(sub)
            subs.append(sub)
        db.session.commit()
        later = utcnow() + timedelta(hours=1)
        to_alice = push.send(users=["alice"], title="x", send_at=later).id
        to_bob = push.send(users=["bob"], title="x", send_at=later).id
        subs[0].status = DEAD
        db.session.execute(sa.delete(push.models.Message).where(push.models.Message.id == to_bob))
        db.session.commit()
        make_due(to_alice)
        make_due(to_bob)
        with push.record() as outbox:
            assert push.dispatch_due() == 2
        assert outbox == []
        [alice_row], [bob_row] = rows(to_alice), rows(to_bob)
        assert alice_row.status == "gone" and "dead" in alice_row.error
        assert bob_row.status == "failed" and "deleted" in bob_row.error


EXIT_SCRIPT = """
import sys
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from py_vapid import Vapid
from flask_push import Push
from flask_push.credentials import vapid_raw_private_key
from flask_push.testing import FakePushService

vapid = Vapid()
vapid.generate_keys()
db = SQLAlchemy()
push = Push(db=db)
app = Flask(__name__)
app.config.update(
    SQLALCHEMY_DATABASE_URI="sqlite:///" + sys.argv[1],
    PUSH_VAPID_PRIVATE_KEY=vapid_raw_private_key(vapid),
    PUSH_VAPID_SUBJECT="mailto:ops@shop.example",
    PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
    PUSH_ALLOW_HTTP_ENDPOINTS=True,
    SECRET_KEY="test-secret",
)
db.init_app(app)
push.init_app(app)
with FakePushService() as service, app.app_context():
    db.create_all()
    browser = service.subscribe()
    db.session.add(push.models.Subscription(
        endpoint=browser.endpoint, p256dh=browser.p256dh, auth=browser.auth,
        user_id="alice", topics=[]))
    db.session.commit()
    push.send(users=["alice"], title="x")
    assert app.extensions["push"].worker.alive
print("sent")
"""


def test_thread_worker_stops_at_interpreter_exit(tmp_path: Any) -> None:
    # The script returns right after send(): the worker finishes (or leaves the row
    # queued) and closes at exit, without a traceback or a hang.
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", EXIT_SCRIPT, str(tmp_path / "exit.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sent" and result.stderr == ""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'exit.db'}")
    with engine.connect() as conn:
        statuses = conn.execute(sa.text("SELECT status FROM push_deliveries")).scalars().all()
    engine.dispose()
    assert statuses in (["sent"], ["queued"])


def test_a_push_that_cannot_be_encrypted_fails_alone(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A subscription whose stored key is no point on P-256 fails its delivery with
    the reason, and the other pushes of its claim go out."""
    app = sending_app()
    good, other = push_fake_webpush.subscribe(), push_fake_webpush.subscribe()
    with app.app_context():
        subscribe(good)
        db.session.add(
            push.models.Subscription(
                endpoint=other.endpoint,
                # stored before any check: not a point on P-256
                p256dh="BA" + "A" * 85,
                auth=other.auth,
                user_id="alice",
                topics=[],
            )
        )
        db.session.commit()
        message = push.send(users=["alice"], title="Hello")
        endpoints = dict(
            db.session.execute(
                sa.select(push.models.Subscription.id, push.models.Subscription.endpoint)
            ).all()
        )
        by_endpoint = {
            endpoints[row.subscription_id]: row
            for row in db.session.scalars(
                sa.select(push.models.Delivery).where(push.models.Delivery.message_id == message.id)
            )
        }
    assert by_endpoint[good.endpoint].status == "sent"
    failed = by_endpoint[other.endpoint]
    assert failed.status == "failed"
    assert failed.error is not None and "p256dh" in failed.error
    assert len(good.received) == 1 and other.received == []


#: deliveries of the fan-out below: with statistics of an empty table, PostgreSQL
#: estimates the rows from the table's pages, and at 2,000 it already guessed so few
#: that it walked the index anyway, with nothing to show
FAN_OUT = 5000


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_claims_walk_their_index_whatever_the_statistics_say(
    make_app: Callable[..., Flask],
) -> None:
    """A fan-out written after the table's statistics were taken (here, of an empty
    table) makes PostgreSQL think almost nothing is queued, and plan each claim as a
    read and sort of every queued delivery. The dispatcher's claims, of any message
    and of one message, walk an index in order instead, and stop at their limit."""
    app = make_app(PUSH_QUEUE="inline")  # testing: sends are suppressed
    delivery = push.models.Delivery.__table__
    with app.app_context():
        with db.engine.begin() as conn:
            # autovacuum would refresh them at a moment of its own choosing
            conn.execute(sa.text("ALTER TABLE push_deliveries SET (autovacuum_enabled = off)"))
            conn.execute(sa.text("ANALYZE push_deliveries"))
            now = utcnow()
            conn.execute(
                sa.insert(push.models.Subscription.__table__),
                [
                    {
                        "id": f"sub_{i:026d}",
                        "endpoint": f"https://fcm.googleapis.com/fcm/send/{i}",
                        "p256dh": BROWSER_P256DH,
                        "auth": "mF2g8NrscYnb3g5GAhQ1YQ",
                        "user_id": f"user-{i}",
                        "topics": [],
                        "created_at": now,
                        "last_seen_at": now,
                    }
                    for i in range(FAN_OUT)
                ],
            )
        message_id = push.send(everyone=True, title="Sale", send_at=now + timedelta(hours=1)).id
        make_due(message_id)
        engine = db.engine
        dispatcher = Dispatcher(app, push.models, engine, push.settings, batch_size=50)
    plans: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        # the claim, in its own transaction (not the look for held inbox items)
        if "SKIP LOCKED" in statement and "push_deliveries" in statement:
            plan = cursor.connection.execute("EXPLAIN " + statement, parameters).fetchall()
            plans.append("\n".join(line for (line,) in plan))

    try:
        with app.app_context():
            # the precondition: left to the statistics, the claim would sort
            sorted_plan = [
                plan
                for (plan,) in db.session.execute(
                    sa.text(
                        "EXPLAIN SELECT id FROM push_deliveries WHERE status = 'queued' "
                        "AND due_at <= now() ORDER BY due_at LIMIT 50"
                    )
                )
            ]
            db.session.rollback()
            assert any("Sort" in line for line in sorted_plan), sorted_plan
            assert dispatcher.run_once() == 50
            assert dispatcher.run_once(message_id=message_id) == 50
    finally:
        sa.event.remove(engine, "before_cursor_execute", explain)
        dispatcher.close()
    everyone, one_message = plans
    assert "Sort" not in everyone and "using ix_push_deliveries_claim" in everyone, everyone
    assert "Sort" not in one_message, one_message
    assert "using ix_push_deliveries_message_due" in one_message, one_message
    with app.app_context():
        statuses = Counter(db.session.scalars(sa.select(delivery.c.status)))
    assert statuses == {"sent": 100, "queued": FAN_OUT - 100}


def test_a_worker_without_the_apps_provider_says_so(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """The app queued it with Web Push set up; the worker that met it has none: its
    delivery fails saying where the setting is missing, not only that it is."""
    import dataclasses

    app = sending_app()
    with app.app_context():
        subscribe(push_fake_webpush.subscribe())
        message = push.send(users=["alice"], title="x", send_at=later())
        make_due(message.id)
        bare = dataclasses.replace(push.settings, providers={})
        dispatcher = Dispatcher(app, push.models, db.engine, bare)
        try:
            assert dispatcher.run_once() == 1
        finally:
            dispatcher.close()
        [row] = rows(message.id)
    assert (row.status, row.reason) == ("failed", "no_provider")
    assert row.error.startswith("no webpush provider is configured, so this target cannot be ")
    assert row.error.endswith(
        " in the config of the process delivering it (workers need the app's PUSH_* settings)"
    )
    # the timeline names the process, as the Providers page (the web app's) says webpush
    # can send
    assert row.events[-1]["detail"] == (
        f"No webpush provider is configured in the worker process that claimed it (host "
        f"{socket.gethostname()}, pid {os.getpid()}), though the process that queued it had "
        "one then, "
        "so it could not be sent: set PUSH_VAPID_PRIVATE_KEY and PUSH_VAPID_SUBJECT in that "
        "process's config "
        "(`flask push worker` and Celery workers need the app's PUSH_* settings), or store "
        "one for its app (POST /providers), then retry what failed."
    )
    assert push_fake_webpush.requests == []
