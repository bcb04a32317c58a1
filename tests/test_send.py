"""push.send(): audiences, checks, the outbox rows it writes, idempotency, the inbox."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from flask_push import scheduled_inbox, signals
from flask_push.errors import PayloadError, ValidationError
from flask_push.models import DEAD, utcnow
from flask_push.testing.fcm import make_registration_token

from conftest import add_subscription, as_user, db, later, make_due, push

APNS_TOKEN = "ab" * 32


def add_installation(
    user_id: str | None = None,
    device_type: str = "android",
    app_id: str = "shop",
    app_version: str | None = None,
    topics: list[str] | None = None,
) -> Any:
    token = make_registration_token() if device_type == "android" else APNS_TOKEN
    ins = push.models.Installation(
        app_id=app_id,
        app_version=app_version,
        device_token=token,
        device_type=device_type,
        user_id=user_id,
        subscriptions=topics or [],
    )
    db.session.add(ins)
    db.session.commit()
    return ins


def deliveries(message_id: str | None = None) -> list[Any]:
    model = push.models.Delivery
    query = sa.select(model).order_by(model.id)
    if message_id is not None:
        query = query.where(model.message_id == message_id)
    return list(db.session.scalars(query))


def targets(message: Any) -> set[str]:
    return {d.subscription_id or d.installation_id for d in deliveries(message.id)}


@pytest.fixture
def outbox_app(make_app: Callable[..., Flask]) -> Any:
    """The inline queue, with sends suppressed (``app.testing``): rows as written."""
    app = make_app(PUSH_QUEUE="inline")
    with app.app_context():
        yield app


def test_a_send_to_no_one_is_done_at_once_as_the_api_says(outbox_app: Flask) -> None:
    message = push.send(users=["nobody"], title="Order #42")
    assert message.recipient_count == 0
    assert message.status == "done"
    admin = as_user("root", admin=True)
    shown = outbox_app.test_client().get(f"/push/messages/{message.id}", headers=admin)
    assert shown.get_json()["status"] == "done"
    later = push.send(users=["nobody"], title="Order #42", send_at=utcnow() + timedelta(hours=1))
    assert later.status == "scheduled"


def test_a_message_not_written_yet_has_a_status(outbox_app: Flask) -> None:
    # a host's own row, added and not flushed: reading its status raised KeyError,
    # and flushed it on the way
    message = push.models.Message(notification={"title": "Hi"}, audience={"users": []})
    db.session.add(message)
    assert message.status == "done"  # it pushes to no one
    assert sa.inspect(message).pending
    message.send_at = utcnow() + timedelta(hours=1)
    assert message.status == "scheduled"
    db.session.rollback()


def test_users_audience(outbox_app: Flask) -> None:
    alice = add_subscription("alice")
    alice_phone = add_installation("alice")
    bob = add_subscription("bob")
    add_subscription("carol")
    message = push.send(users=["alice", "bob", "nobody"], title="Order #42", body="Shipped")
    assert message.id.startswith("msg_")
    assert message.status == "done"  # the inline queue recorded them all
    assert message.recipient_count == 3
    assert targets(message) == {alice.id, alice_phone.id, bob.id}
    assert message.audience == {"users": ["alice", "bob", "nobody"]}
    assert message.notification["title"] == "Order #42"
    assert message.notification["ttl"] == 86400
    assert message.notification["collapseKey"] is None


def test_users_may_be_any_iterable_of_ids(outbox_app: Flask) -> None:
    """``users: Iterable[str]``: a generator or a dict's keys were refused with
    "must be a list"; a string still is (it would be its letters)."""
    alice, bob = add_subscription("alice"), add_subscription("bob")
    wanted = {"alice": 1, "bob": 2}
    for users in (wanted.keys(), (user for user in wanted)):
        message = push.send(users=users, title="Order #42")
        assert targets(message) == {alice.id, bob.id}
    with pytest.raises(ValidationError):
        push.send(users="alice", title="Order #42")


def test_topic_audience_matches_exact_names(outbox_app: Flask) -> None:
    offers = add_subscription(topics=["offers", "news"])
    add_subscription(topics=["offers2"])
    add_subscription(topics=["xoffers"])
    phone = add_installation(topics=["offers"])
    add_installation(topics=["news"])
    # "_" is a LIKE wildcard: "a_b" must not match "axb"
    underscored = add_subscription(topics=["a_b"])
    add_subscription(topics=["axb"])
    assert targets(push.send(topic="offers", title="Sale")) == {offers.id, phone.id}
    assert targets(push.send(topic="a_b", title="x")) == {underscored.id}


def test_query_audience(outbox_app: Flask) -> None:
    browser = add_subscription("alice")
    ios = add_installation("alice", device_type="ios", app_version="2.0")
    android = add_installation("bob", device_type="android", app_version="1.0")
    other_app = add_installation("carol", device_type="android", app_id="other")
    query = {"deviceType": "ios"}
    assert targets(push.send(query=query, title="x")) == {ios.id}
    query = {"userId": {"inq": ["alice", "bob"]}}  # userId alone: browsers too
    assert targets(push.send(query=query, title="x")) == {browser.id, ios.id, android.id}
    query = {"appId": "shop", "appVersion": {"neq": "2.0"}}
    assert targets(push.send(query=query, title="x")) == {android.id}
    query = {"userId": {"nin": ["alice"]}, "deviceType": "android"}
    assert targets(push.send(query=query, title="x")) == {android.id, other_app.id}
    with pytest.raises(ValidationError, match="query.os"):
        push.send(query={"os": "ios"}, title="x")
    with pytest.raises(ValidationError, match="query.userId"):
        push.send(query={"userId": {"like": "a%"}}, title="x")


def test_everyone_skips_dead_targets(outbox_app: Flask) -> None:
    live = add_subscription()
    phone = add_installation()
    dead = add_subscription()
    dead.status = DEAD
    db.session.commit()
    assert targets(push.send(everyone=True, title="x")) == {live.id, phone.id}


def test_exactly_one_audience(outbox_app: Flask) -> None:
    with pytest.raises(ValidationError, match="exactly one audience"):
        push.send(title="x")
    with pytest.raises(ValidationError, match="users, topic"):
        push.send(users=["a"], everyone=True, title="x")
    with pytest.raises(ValidationError, match="users"):
        push.send(users="alice", title="x")
    with pytest.raises(ValidationError, match="urgency"):
        push.send(everyone=True, title="x", urgency="asap")
    with pytest.raises(ValidationError, match="url"):
        push.send(everyone=True, title="x", url="javascript:alert(1)")
    with pytest.raises(ValidationError, match="sendAt"):
        push.send(everyone=True, title="x", send_at=utcnow().replace(tzinfo=None))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Message)) == 0


def test_notify_by_id(outbox_app: Flask) -> None:
    sub = add_subscription("alice")
    phone = add_installation("alice")
    assert targets(push.notify_by_id(sub.id, title="x")) == {sub.id}
    message = push.notify_by_id(phone.id, title="x", ttl=60, idempotency_key="k")
    assert targets(message) == {phone.id}
    assert message.notification["ttl"] == 60
    with pytest.raises(ValidationError, match="id"):
        push.notify_by_id("sub_nope", title="x")


def test_oversize_notification_writes_nothing(outbox_app: Flask) -> None:
    add_subscription("alice")
    with pytest.raises(PayloadError, match="limit is 4096"):
        push.send(users=["alice"], title="x", body="é" * 3000, inbox=True)
    for model in (push.models.Message, push.models.Delivery, push.models.InboxItem):
        assert db.session.scalar(sa.select(sa.func.count()).select_from(model)) == 0


def test_unconfigured_provider_fails_its_rows(outbox_app: Flask) -> None:
    # Only Web Push is configured: the phones' rows are failed, with the reason.
    sub = add_subscription("alice")
    add_installation("alice", device_type="ios")
    message = push.send(users=["alice"], title="x")
    assert message.recipient_count == 2
    rows = {d.kind: d for d in deliveries(message.id)}
    assert rows["webpush"].subscription_id == sub.id
    assert rows["apns"].status == "failed"
    assert "PUSH_APNS_KEY" in rows["apns"].error


def test_idempotency_key_sends_once(outbox_app: Flask) -> None:
    add_subscription("alice")
    first = push.send(users=["alice"], title="x", idempotency_key="order-42-shipped")
    again = push.send(users=["alice"], title="changed", idempotency_key="order-42-shipped")
    assert again.id == first.id
    assert len(deliveries()) == 1


def test_idempotency_race_returns_the_winner(outbox_app: Flask) -> None:
    add_subscription("alice")
    results: list[str] = []
    app = outbox_app

    def send() -> None:
        with app.app_context():
            results.append(push.send(users=["alice"], title="x", idempotency_key="race").id)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert len(deliveries()) == 1


def test_send_at_schedules(outbox_app: Flask) -> None:
    add_subscription("alice")
    later = utcnow() + timedelta(hours=1)
    message = push.send(users=["alice"], title="x", send_at=later, ttl=600)
    assert message.status == "scheduled"
    [row] = deliveries(message.id)
    assert row.due_at == later and row.status == "queued"
    assert row.expires_at == later + timedelta(seconds=600)
    # Not claimed before it is due...
    assert push.dispatch_due() == 0
    assert deliveries(message.id)[0].attempts == 0
    # ...and sent once it is.
    make_due(message.id)
    with push.record() as outbox:
        assert push.dispatch_due() == 1
    assert [p.message_id for p in outbox] == [message.id]
    assert deliveries(message.id)[0].status == "sent"


def test_inbox_items_for_users(outbox_app: Flask) -> None:
    add_subscription("alice")
    message = push.send(
        users=["alice", "bob"], title="Export", body="done", inbox=True, notify_type="export"
    )
    for user in ("alice", "bob"):
        result = push.search(user)
        [item] = result.items
        assert (item.id, item.title, item.type, item.body) == (
            message.id,
            "Export",
            "export",
            "done",
        )
        assert result.new_count == 1


def test_inbox_items_for_resolved_users(outbox_app: Flask) -> None:
    add_subscription("alice", topics=["offers"])
    add_subscription(None, topics=["offers"])
    push.send(topic="offers", title="Sale", inbox=True)
    assert push.search("alice").total_count == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(push.models.InboxItem)) == 1


def test_a_scheduled_message_writes_its_inbox_items_when_it_comes_due(outbox_app: Flask) -> None:
    """Until ``send_at`` the users see nothing of it: not in the list, not in the
    unread count; then a worker's round writes the items and announces them."""
    add_subscription("alice")
    message = push.send(
        users=["alice", "bob"], title="Flash sale", body="6 pm", inbox=True, send_at=later()
    )
    assert message.status == "scheduled"
    for user in ("alice", "bob"):
        assert (push.search(user).total_count, push.search(user).new_count) == (0, 0)
    assert push.dispatch_due() == 0  # not due: nothing written
    assert push.search("bob").total_count == 0

    saved: list[tuple[str, str, bool]] = []

    def on_saved(sender: Any, item: Any, created: bool) -> None:
        saved.append((item.user_id, item.id, created))

    make_due(message.id)
    with signals.inbox_item_saved.connected_to(on_saved, sender=outbox_app):
        with push.record():
            assert push.dispatch_due() == 1  # alice's browser; bob has none
    assert sorted(saved) == [("alice", message.id, True), ("bob", message.id, True)]
    for user in ("alice", "bob"):
        result = push.search(user)
        [item] = result.items
        assert (item.id, item.title, item.body, result.new_count) == (
            message.id,
            "Flash sale",
            "6 pm",
            1,
        )
    # written once: the next look finds nothing held
    assert push.dispatch_due() == 0
    assert push.search("alice").total_count == 1
    held = push.models.ScheduledInboxItem
    assert db.session.scalar(sa.select(sa.func.count()).select_from(held)) == 0


def test_two_workers_write_a_held_inbox_item_once(outbox_app: Flask) -> None:
    """A second worker skips the rows the first holds (PostgreSQL), or waits for the
    first's transaction and finds them gone (SQLite): each item is written once."""
    message = push.send(users=["alice", "bob"], title="Sale", inbox=True, send_at=later())
    make_due(message.id)
    engine, models = db.engine, push.models
    first = Session(engine, expire_on_commit=False)
    try:
        assert len(scheduled_inbox.write_due(first, models, utcnow()).items) == 2  # not committed
        second: list[Any] = []

        def take() -> None:
            with Session(engine) as session:
                second.extend(scheduled_inbox.write_due(session, models, utcnow()).items)
                session.commit()

        racing = threading.Thread(target=take)
        racing.start()
        racing.join(0.3)
        # PostgreSQL: skipped at once; SQLite: waiting for the first's lock
        assert racing.is_alive() is (engine.dialect.name == "sqlite")
        first.commit()
        racing.join(10)
        assert not racing.is_alive() and second == []
    finally:
        first.close()
    assert [push.search(user).total_count for user in ("alice", "bob")] == [1, 1]


def test_an_item_the_host_wrote_under_the_messages_id_is_updated(outbox_app: Flask) -> None:
    message = push.send(users=["alice"], title="Sale", inbox=True, send_at=later())
    push.upsert(user_id="alice", id=message.id, title="Sale (draft)")
    make_due(message.id)
    assert push.dispatch_due() == 0
    [item] = push.search("alice").items
    assert (item.id, item.title) == (message.id, "Sale")
    assert push.search("alice").total_count == 1


def test_a_cancelled_scheduled_message_writes_no_inbox_item(outbox_app: Flask) -> None:
    add_subscription("alice")
    message = push.send(users=["alice"], title="Flash sale", inbox=True, send_at=later())
    push.cancel(message.id)
    make_due(message.id)
    assert push.dispatch_due() == 0
    assert push.search("alice").total_count == 0


def test_a_cancelled_message_that_held_only_inbox_items_says_it_was_cancelled(
    outbox_app: Flask,
) -> None:
    """bob has no browser or device: the message holds his inbox item alone. The
    cancel took it back, yet the message said "scheduled", without a sign of the
    cancel, and a retry was not refused, as it is for a message with deliveries."""
    message = push.send(users=["bob"], title="Flash sale", inbox=True, send_at=later())
    assert message.recipient_count == 0
    client = outbox_app.test_client()
    cancelled = client.post(f"/push/messages/{message.id}/cancel", headers=as_user("root", True))
    assert cancelled.status_code == 200, cancelled.get_json()
    answer = cancelled.get_json()
    assert answer["status"] == "done"
    assert answer["cancelledAt"] is not None
    read = client.get(f"/push/messages/{message.id}", headers=as_user("root", True)).get_json()
    assert (read["status"], read["cancelledAt"]) == ("done", answer["cancelledAt"])
    with pytest.raises(ValidationError) as refused:
        push.retry_failed(message.id)
    assert refused.value.code == "message_cancelled"
    make_due(message.id)
    assert push.dispatch_due() == 0
    assert push.search("bob").total_count == 0


def test_a_message_nothing_was_left_to_cancel_of_is_not_marked_cancelled(
    outbox_app: Flask,
) -> None:
    message = push.send(users=["bob"], title="Flash sale", inbox=True)  # written at once
    assert push.cancel(message.id)["cancelledAt"] is None
    assert push.search("bob").total_count == 1


def test_a_deleted_scheduled_message_writes_no_inbox_item(outbox_app: Flask) -> None:
    message = push.send(users=["bob"], title="Flash sale", inbox=True, send_at=later())
    make_due(message.id)
    db.session.execute(sa.delete(push.models.Message).where(push.models.Message.id == message.id))
    db.session.commit()
    assert push.dispatch_due() == 0
    assert push.search("bob").total_count == 0
    held = push.models.ScheduledInboxItem
    assert db.session.scalar(sa.select(sa.func.count()).select_from(held)) == 0


def test_message_queued_signal(outbox_app: Flask) -> None:
    seen: list[Any] = []

    def on_queued(sender: Any, message: Any) -> None:
        seen.append(message.id)

    with signals.message_queued.connected_to(on_queued, sender=outbox_app):
        message = push.send(everyone=True, title="x")
    assert seen == [message.id]


def test_a_failing_receiver_neither_undoes_nor_stops_a_send(
    outbox_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """The message is committed before the signal: it must still go out, and the
    caller must not see an error (it would retry, and send it twice)."""
    add_subscription("alice")
    seen: list[str] = []

    def broken(sender: Any, message: Any) -> None:
        raise RuntimeError("the host's receiver is broken")

    def working(sender: Any, message: Any) -> None:
        seen.append(message.id)

    with (
        signals.message_queued.connected_to(broken, sender=outbox_app),
        signals.message_queued.connected_to(working, sender=outbox_app),
        push.record() as outbox,
    ):
        message = push.send(users=["alice"], title="Shipped", inbox=True)
    assert seen == [message.id]  # the other receivers still ran
    assert [p.notification.title for p in outbox] == ["Shipped"]  # and it was sent
    assert push.search("alice").total_count == 1
    assert "'message-queued'" in caplog.text and "the host's receiver is broken" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"data": {"k": "\ud800"}}, "data"),
        ({"data": {"k": ["x", {"\x00": 1}]}}, "data"),
        ({"data": {"k": float("nan")}}, "data"),
        ({"data": {"at": datetime(2030, 1, 1)}}, "data"),
        ({"send_at": datetime(9999, 12, 31, tzinfo=timezone.utc)}, "sendAt"),
        ({"send_at": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))}, "sendAt"),
        ({"send_at": utcnow() + timedelta(days=366)}, "sendAt"),
    ],
)
def test_what_cannot_be_stored_or_scheduled_is_refused_before_writing(
    outbox_app: Flask, kwargs: dict[str, Any], field: str
) -> None:
    sub = add_subscription("alice")
    for call in (
        lambda: push.send(users=["alice"], title="x", inbox=True, **kwargs),
        lambda: push.notify_by_id(sub.id, title="x", inbox=True, **kwargs),
    ):
        with pytest.raises(ValidationError) as info:
            call()
        assert info.value.field == field
    for model in (push.models.Message, push.models.Delivery, push.models.InboxItem):
        assert db.session.scalar(sa.select(sa.func.count()).select_from(model)) == 0


def test_send_at_up_to_a_year_ahead_is_scheduled(outbox_app: Flask) -> None:
    later = utcnow() + timedelta(days=364)
    message = push.send(
        everyone=True, title="x", send_at=later.astimezone(timezone(timedelta(hours=2)))
    )
    assert message.send_at == later


@pytest.mark.parametrize("users", [True, {"alice": 1}, "alice", 42])
def test_users_must_be_a_list(outbox_app: Flask, users: Any) -> None:
    with pytest.raises(ValidationError) as info:
        push.send(users=users, title="x")
    assert info.value.field == "users"
