"""``push.activity()``: one call shows an activity's new state in place on every screen:
the live events, one inbox item, Web Push, FCM and APNs (sent to the real fakes),
older queued states superseded, timestamps that only grow, and the end."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_push import activities
from flask_push.dispatch import Dispatcher
from flask_push.errors import PayloadError, ValidationError
from flask_push.testing import FakeAPNs, FakeFCM, FakePushService
from flask_push.testing.fcm import make_registration_token

from conftest import a_claim_before, as_user, db, make_due, push, quiet_now, subscribe

IPHONE = "ab" * 32
LIVE_TOKEN = "cd" * 32
START_TOKEN = "ef" * 32
STATE = {"status": "out_for_delivery", "step": 4, "steps": 5, "eta": "17:40"}


@pytest.fixture
def live(sending_app: Callable[..., Flask], push_fake_apns: FakeAPNs) -> Flask:
    return sending_app(
        PUSH_CATEGORIES={"order_status": {"label": "Order updates", "required": True}},
        **push_fake_apns.app_config(),
    )


def devices(service: FakePushService, user: str = "alice") -> dict[str, Any]:
    """``user``'s browser, Android phone and iPhone."""
    browser = service.subscribe(user)
    subscribe(browser, user)
    android = make_registration_token()
    phones = [
        push.models.Installation(
            app_id="shop", device_token=android, device_type="android", user_id=user
        ),
        push.models.Installation(
            app_id="shop", device_token=IPHONE, device_type="ios", user_id=user
        ),
    ]
    db.session.add_all(phones)
    db.session.commit()
    return {"browser": browser, "android": android, "iphone": phones[1].id}


def order(event: str = "update", **given: Any) -> Any:
    values = {
        "users": ["alice"],
        "title": "Order #42",
        "body": "Out for delivery",
        "state": STATE,
        "url": "/orders/42",
        "event": event,
        "category": "order_status",
        **given,
    }
    return push.activity("order-42", **values)


def events(channel: str) -> list[Any]:
    kept = push.state.get_realtime().backplane.replay(channel, 0)
    return [(e.event, e.data) for e in kept.events]


def test_one_call_reaches_every_screen_in_place(
    live: Flask,
    push_fake_webpush: FakePushService,
    push_fake_fcm: FakeFCM,
    push_fake_apns: FakeAPNs,
) -> None:
    with live.app_context():
        mine = devices(push_fake_webpush)
        first = order("start", state={"status": "placed", "step": 1, "steps": 5})
        second = order()
        # the inbox: one item for the activity, updated in place, with its progress
        items = push.search("alice").items
        assert [item.id for item in items] == ["order-42"]
        assert items[0].progress == {"total": 5, "processed": 4}
        assert items[0].data == {"activity": {"id": "order-42", "event": "update", "state": STATE}}
        # live: on the user's channel and the activity's own
        for channel in ("user:alice", "activity:order-42"):
            activity = [data for event, data in events(channel) if event == "activity"]
            assert [a["event"] for a in activity] == ["start", "update"]
            assert activity[-1]["state"] == STATE and activity[-1]["messageId"] == second.id
        assert push.may_join("alice", "activity:order-42")
        assert not push.may_join("bob", "activity:order-42")
        statuses = {
            m.id: sorted(
                db.session.scalars(
                    sa.select(push.models.Delivery.status).where(
                        push.models.Delivery.message_id == m.id
                    )
                )
            )
            for m in (first, second)
        }
        assert statuses == {first.id: ["sent"] * 3, second.id: ["sent"] * 3}
    # browsers: the activity id is the tag, and the Topic header comes from it
    pushed = mine["browser"].received
    assert [p.json()["tag"] for p in pushed] == ["order-42", "order-42"]
    assert pushed[0].topic == pushed[1].topic == "order-42"
    # Android: the same tag and collapse key
    android = [m.message["android"] for m in push_fake_fcm.messages]
    assert [a["notification"]["tag"] for a in android] == ["order-42", "order-42"]
    assert [a["collapse_key"] for a in android] == ["order-42", "order-42"]
    # iOS without a Live Activity token: an alert that replaces the last
    assert [n.headers.get("apns-collapse-id") for n in push_fake_apns.notifications] == [
        "order-42",
        "order-42",
    ]


def test_an_activity_on_android_is_delivered_now_and_replaced_in_place(
    live: Flask, push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM
) -> None:
    """Android has no Live Activity: the order's notification is how the shopper
    follows it. Each state goes at FCM's high priority (a normal one waits for a
    phone in Doze to wake, and "out for delivery" would come after the courier), with
    the activity id as tag and collapse key, the end too, so it replaces the order's
    notification rather than stacking under it. A plain push keeps its urgency."""
    with live.app_context():
        android = devices(push_fake_webpush)["android"]
        order("start", state={"status": "placed", "step": 1, "steps": 5})
        order()
        order("end", state={**STATE, "status": "delivered", "step": 5})
        push.send(users=["alice"], title="A plain push")
    sent = [m.message for m in push_fake_fcm.messages if m.token == android]
    *states, plain = sent
    assert [m["android"]["priority"] for m in states] == ["HIGH"] * 3
    assert {
        (m["android"]["notification"]["tag"], m["android"]["collapse_key"]) for m in states
    } == {("order-42", "order-42")}
    shown = [json.loads(m["data"]["activity"]) for m in states]
    assert [(a["id"], a["event"]) for a in shown] == [
        ("order-42", "start"),
        ("order-42", "update"),
        ("order-42", "end"),
    ]
    assert shown[-1]["state"]["status"] == "delivered"
    assert shown[0]["timestamp"] < shown[1]["timestamp"] < shown[2]["timestamp"]
    assert plain["android"]["priority"] == "NORMAL"


def test_live_activity_tokens_pick_the_live_activity_push(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    client = live.test_client()
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
    alice = as_user("alice")
    answer = client.patch(
        f"/push/installations/{iphone}", json={"pushToStartToken": START_TOKEN}, headers=alice
    )
    assert answer.status_code == 200 and answer.get_json()["pushToStartToken"] == START_TOKEN
    with live.app_context():
        order("start", attributes_type="OrderAttributes", attributes={"number": 42})
    registered = client.post(
        f"/push/installations/{iphone}/activities",
        json={"activityId": "order-42", "pushToken": LIVE_TOKEN.upper()},
        headers=alice,
    )
    assert registered.status_code == 201, registered.get_json()
    assert registered.get_json()["pushToken"] == LIVE_TOKEN  # stored as APNs tokens are
    again = client.post(
        f"/push/installations/{iphone}/activities",
        json={"activityId": "order-42", "pushToken": LIVE_TOKEN},
        headers=alice,
    )
    assert again.status_code == 200
    with live.app_context():
        order()
    start, update = push_fake_apns.notifications
    assert (start.device_token, update.device_token) == (START_TOKEN, LIVE_TOKEN)
    assert {n.push_type for n in (start, update)} == {"liveactivity"}
    assert start.topic == update.topic == "com.example.app.push-type.liveactivity"
    assert start.aps["event"] == "start" and start.aps["attributes"] == {"number": 42}
    assert start.aps["alert"] == {"title": "Order #42", "body": "Out for delivery"}
    assert update.aps["event"] == "update" and update.aps["content-state"] == STATE
    assert update.aps["timestamp"] > start.aps["timestamp"]
    assert push_fake_apns.live_activities[LIVE_TOKEN].content_state == STATE
    with live.app_context():
        ended = order("end", state={**STATE, "status": "delivered", "step": 5})
        assert ended.activity["event"] == "end"
    shown = push_fake_apns.live_activities[LIVE_TOKEN]
    assert shown.event == "end" and shown.content_state["status"] == "delivered"


def test_an_urgent_update_goes_at_priority_10(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """ "The courier is at your door" cannot wait: the README promised priority 10
    for an update of `high` urgency, and push.activity() took no urgency."""
    with live.app_context():
        mine = devices(push_fake_webpush)
        db.session.add(
            push.models.ActivityToken(
                installation_id=mine["iphone"], activity_id="order-42", push_token=LIVE_TOKEN
            )
        )
        db.session.commit()
        order()
        order(state={**STATE, "eta": "now"}, urgency="high")
        with pytest.raises(ValidationError, match="urgency"):
            order(urgency="at once")
    calm, urgent = push_fake_apns.notifications
    assert (calm.headers["apns-priority"], urgent.headers["apns-priority"]) == ("5", "10")
    assert "alert" not in urgent.aps  # an update brings no alert, urgent or not
    assert [p.urgency for p in mine["browser"].received] == ["normal", "high"]


def test_a_start_run_twice_starts_one_live_activity(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """A host's job that calls start twice: no second push-to-start to the phone that
    had one (each would start a Live Activity there); it gets the start as an alert."""
    client = live.test_client()
    with live.app_context():
        mine = devices(push_fake_webpush)
        iphone = mine["iphone"]
    patched = client.patch(
        f"/push/installations/{iphone}",
        json={"pushToStartToken": START_TOKEN},
        headers=as_user("alice"),
    )
    assert patched.status_code == 200
    with live.app_context():
        first = order("start", attributes_type="OrderAttributes", attributes={"number": 42})
        second = order("start", attributes_type="OrderAttributes", attributes={"number": 42})
        assert (first.activity["event"], second.activity["event"]) == ("start", "start")
    started = [n for n in push_fake_apns.notifications if n.device_token == START_TOKEN]
    assert len(started) == 1 and started[0].aps["event"] == "start"
    # the device without the Live Activity's own token yet: the state as an alert
    assert [n.push_type for n in push_fake_apns.notifications] == ["liveactivity", "alert"]


def test_a_start_that_waited_is_replaced_by_its_retry_which_starts_it(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """The first start waits for quiet hours when the job runs again: the second
    supersedes it and goes as the push-to-start, once they end."""
    app = sending_app(PUSH_CATEGORIES={"deals": {"label": "Deals"}}, **push_fake_apns.app_config())
    with app.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        phone = db.session.get(push.models.Installation, iphone)
        phone.push_to_start_token = START_TOKEN
        db.session.commit()
        quiet_now()
        for _ in range(2):
            order(
                "start",
                category="deals",
                attributes_type="OrderAttributes",
                attributes={"number": 42},
            )
        push.set_preferences("alice", quiet_hours=None)
        push.dispatch_due()
    started = [n for n in push_fake_apns.notifications if n.device_token == START_TOKEN]
    assert len(started) == 1 and started[0].aps["event"] == "start"
    assert [n.push_type for n in push_fake_apns.notifications] == ["liveactivity"]


def test_the_users_of_the_latest_call_are_the_activitys(live: Flask) -> None:
    """A courier replaced by another may no longer join the delivery's channel, whose
    next states (a door code) are not theirs to see."""
    with live.app_context():
        order("start", users=["alice", "courier_a"])
        assert push.may_join("courier_a", "activity:order-42")
        order(users=["alice", "courier_b"], state={**STATE, "door": "4711"})
        assert not push.may_join("courier_a", "activity:order-42")
        assert push.may_join("courier_b", "activity:order-42")
        assert push.may_join("alice", "activity:order-42")


def test_a_shut_out_that_fails_is_logged_and_the_call_stands(
    live: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The sockets of a user left out cannot be made to leave (Redis away): the log
    says what that means, and the call, committed, stands."""
    from flask_push.errors import BackplaneError
    from flask_push.realtime import Realtime

    def unreachable(*args: Any) -> None:
        raise BackplaneError("live event not published: Redis did not answer")

    monkeypatch.setattr(Realtime, "shut_out", unreachable)
    with live.app_context():
        order("start", users=["alice", "courier_a"])
        order(users=["alice", "courier_b"])
        assert not push.may_join("courier_a", "activity:order-42")
    assert (
        "1 user(s) left out of 'activity:order-42' were not made to leave its channel "
        "(live event not published: Redis did not answer): their sockets already on it "
        "see its events until they reconnect"
    ) in caplog.text


def test_a_user_who_turned_the_inbox_off_gets_no_live_event(
    sending_app: Callable[..., Flask],
) -> None:
    """The inbox channel is the inbox item and its live events: turned off, neither
    comes (the activity's own channel, which a page showing it joins, still has it)."""
    app = sending_app(PUSH_CATEGORIES={"deliveries": {"label": "Deliveries"}})
    with app.app_context():
        push.set_preferences("bob", categories={"deliveries": {"inbox": False}})
        push.activity("order-42", users=["alice", "bob"], title="Order #42", category="deliveries")
        assert [e for e, _ in events("user:alice")] == ["notification", "unread", "activity"]
        assert [e for e, _ in events("user:bob")] == []
        assert [e for e, _ in events("activity:order-42")] == ["activity"]
        assert [item.id for item in push.search("bob").items] == []


def register_live_token(app: Flask, iphone: str, token: str = LIVE_TOKEN) -> Any:
    return app.test_client().post(
        f"/push/installations/{iphone}/activities",
        json={"activityId": "order-42", "pushToken": token},
        headers=as_user("alice"),
    )


def test_a_live_activity_token_registered_late_gets_the_latest_state(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """The states before the app registered its Live Activity's token went to the
    device as alerts: the token gets the latest state at once, without an alert (the
    user had one), else the Live Activity shows the state it started with."""
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        order("start", state={"status": "placed", "step": 1, "steps": 5})
        latest = order()
        stamp = latest.activity["timestamp"]
    assert [n.push_type for n in push_fake_apns.notifications] == ["alert", "alert"]
    assert register_live_token(live, iphone).status_code == 201
    caught = push_fake_apns.notifications[-1]
    assert (caught.device_token, caught.push_type) == (LIVE_TOKEN, "liveactivity")
    assert caught.aps == {"timestamp": stamp, "event": "update", "content-state": STATE}
    assert push_fake_apns.live_activities[LIVE_TOKEN].content_state == STATE
    # registering the same token again is not a new Live Activity: nothing more
    assert register_live_token(live, iphone).status_code == 200
    assert len(push_fake_apns.notifications) == 3
    with live.app_context():
        [message] = [
            m
            for m in db.session.scalars(sa.select(push.models.Message))
            if m.audience == {"id": iphone}
        ]
        assert message.activity_id == "order-42" and message.inbox is False
        [entry] = push.explain(message.id)
        assert entry["status"] == "sent"
        # the operator's timeline says what this second push of the state is
        assert entry["events"][0]["detail"] == (
            "Queued for sending. A catch-up: the activity's latest state again, without "
            "an alert, for the Live Activity token the device's app registered after that "
            "state was sent to it."
        )
        assert [item.id for item in push.search("alice").items] == ["order-42"]
        # the next state goes to the token as any other, and supersedes nothing sent
        order(state={**STATE, "step": 5})
    assert push_fake_apns.live_activities[LIVE_TOKEN].content_state["step"] == 5


def test_an_ended_activity_is_ended_on_a_live_activity_registered_late(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        order("start")
        order("end", state={**STATE, "status": "delivered"}, dismiss_at=None)
    assert register_live_token(live, iphone).status_code == 201
    caught = push_fake_apns.notifications[-1]
    assert caught.device_token == LIVE_TOKEN
    assert caught.aps["event"] == "end" and "alert" not in caught.aps
    assert push_fake_apns.live_activities[LIVE_TOKEN].content_state["status"] == "delivered"


def test_nothing_is_caught_up_that_the_token_will_get_or_the_user_never_had(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        bobs = push.models.Installation(
            app_id="shop", device_token="12" * 32, device_type="ios", user_id="bob"
        )
        db.session.add(bobs)
        db.session.commit()
        bobs = bobs.id
    # no activity yet: the token waits for the first state
    assert register_live_token(live, iphone).status_code == 201
    assert push_fake_apns.notifications == []
    with live.app_context():
        order("start")  # to alice's token: the state it has
    assert [n.device_token for n in push_fake_apns.notifications] == [LIVE_TOKEN]
    # bob is not among the activity's users
    bob = live.test_client().post(
        f"/push/installations/{bobs}/activities",
        json={"activityId": "order-42", "pushToken": "34" * 32},
        headers=as_user("bob"),
    )
    assert bob.status_code == 201
    assert len(push_fake_apns.notifications) == 1


def test_a_state_on_its_way_when_the_token_came_is_caught_up(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """A worker that had read the push before the token was registered sends it to
    the device: the token gets the state as well (the same timestamp, no alert)."""
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        latest = order()
        d = push.models.Delivery
        db.session.execute(
            sa.update(d)
            .where(d.message_id == latest.id, d.installation_id == iphone)
            .values(status="queued", lease_until=datetime.now(timezone.utc) + timedelta(minutes=1))
        )
        db.session.commit()
    assert register_live_token(live, iphone).status_code == 201
    assert push_fake_apns.notifications[-1].device_token == LIVE_TOKEN


def test_a_new_live_activity_after_a_dead_one_is_caught_up(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """The user dismissed the Live Activity (its token died on the last state) and the
    app starts another: the new token gets the state the dead one missed; a token
    changed in place too."""
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
    register_live_token(live, iphone)
    push_fake_apns.unregister(LIVE_TOKEN)
    with live.app_context():
        order()
    assert register_live_token(live, iphone, "12" * 32).status_code == 201
    assert push_fake_apns.live_activities["12" * 32].content_state == STATE
    changed = register_live_token(live, iphone, "34" * 32)
    assert changed.status_code == 200
    assert push_fake_apns.live_activities["34" * 32].content_state == STATE
    caught = push_fake_apns.notifications[-1]
    assert caught.headers["apns-priority"] == "5" and "alert" not in caught.aps


def test_a_push_to_start_token_registered_after_the_start_leaves_the_catch_up(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """The start went to the device as an alert; the app registered its push-to-start
    token later, then started the Live Activity itself: it is caught up."""
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        order("start", attributes_type="OrderAttributes", attributes={"number": 42})
    alice = as_user("alice")
    client = live.test_client()
    client.patch(
        f"/push/installations/{iphone}", json={"pushToStartToken": START_TOKEN}, headers=alice
    )
    assert register_live_token(live, iphone).status_code == 201
    caught = push_fake_apns.notifications[-1]
    assert caught.device_token == LIVE_TOKEN and caught.aps["event"] == "update"


def test_a_changed_token_after_a_retried_push_to_start_is_caught_up(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """The start failed on the push-to-start token and its retry went to the Live
    Activity's own token; that token then changes: the new one gets the state."""
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        installation = db.session.get(push.models.Installation, iphone)
        installation.push_to_start_token = START_TOKEN
        db.session.commit()
        push_fake_apns.fail_next(503, "ServiceUnavailable", token=START_TOKEN)
        started = order("start", attributes_type="OrderAttributes", attributes={"number": 42})
    assert register_live_token(live, iphone).status_code == 201  # the start still waits
    with live.app_context():
        make_due(started.id)
        push.dispatch_due()
        [entry] = [e for e in push.explain(started.id) if e["target"]["kind"] == "apns"]
        assert entry["status"] == "sent"
    assert push_fake_apns.notifications[-1].device_token == LIVE_TOKEN
    assert register_live_token(live, iphone, "12" * 32).status_code == 200
    assert push_fake_apns.notifications[-1].device_token == "12" * 32


def test_a_catch_up_still_waiting_is_not_queued_twice(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """The token changes while its catch-up waits for a retry: that catch-up goes to
    the new token, and no second one is queued."""
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        order()
    push_fake_apns.fail_next(503, "ServiceUnavailable", token=LIVE_TOKEN)
    register_live_token(live, iphone)
    assert register_live_token(live, iphone, "12" * 32).status_code == 200
    with live.app_context():
        m = push.models.Message
        caught = [x for x in db.session.scalars(sa.select(m)) if x.audience == {"id": iphone}]
        assert len(caught) == 1
        make_due(caught[0].id)
        push.dispatch_due()
    assert push_fake_apns.live_activities["12" * 32].content_state == STATE


def test_a_state_the_quiet_hours_held_back_is_not_caught_up(
    sending_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    push_fake_apns: FakeAPNs,
) -> None:
    app = sending_app(
        PUSH_CATEGORIES={"deals": {"label": "Deals"}},
        PUSH_DEFAULT_TTL=600,
        **push_fake_apns.app_config(),
    )
    with app.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        quiet_now()
        held = order(category="deals")
        [entry] = [e for e in push.explain(held.id) if e["target"]["kind"] == "apns"]
        assert entry["reason"] == "quiet_hours_expired"
    assert register_live_token(app, iphone).status_code == 201
    assert push_fake_apns.notifications == []


def test_a_catch_up_whose_token_died_meanwhile_is_not_sent_to_the_device(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        order()
    push_fake_apns.fail_next(503, "ServiceUnavailable", token=LIVE_TOKEN)
    assert register_live_token(live, iphone).status_code == 201
    with live.app_context():
        d, token = push.models.Delivery, push.models.ActivityToken
        [waiting] = db.session.scalars(sa.select(d).where(d.status == "queued"))
        db.session.execute(sa.delete(token))
        db.session.execute(sa.update(d).where(d.id == waiting.id).values(due_at=sa.func.now()))
        db.session.commit()
        push.dispatch_due()
        [entry] = push.explain(waiting.message_id)
        assert (entry["status"], entry["reason"]) == ("gone", "target_dead")
        assert entry["events"][-1]["detail"].startswith("Its Live Activity token was already")
    assert [n.push_type for n in push_fake_apns.notifications] == ["alert"]


def test_a_catch_up_that_cannot_be_queued_still_registers_the_token(
    live: Flask,
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        order()

    def refused(*args: Any) -> None:
        raise PayloadError("too large", provider="apns")

    monkeypatch.setattr(activities, "queue_catch_up", refused)
    assert register_live_token(live, iphone).status_code == 201
    assert "could not be queued to it; its next state will be" in caplog.text
    with live.app_context():
        token = push.models.ActivityToken
        assert db.session.get(token, (iphone, "order-42")).push_token == LIVE_TOKEN


def test_a_catch_up_queued_behind_a_newer_state_leaves_it(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """A call made while a catch-up was being queued: its newer state is not taken
    for an older one, and the catch-up gives way to it."""
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        older = order(state={"status": "confirmed", "step": 2, "steps": 5})
        db.session.add(
            push.models.ActivityToken(
                installation_id=iphone, activity_id="order-42", push_token=LIVE_TOKEN
            )
        )
        db.session.commit()
        push_fake_apns.fail_next(503, "ServiceUnavailable", token=LIVE_TOKEN)
        newer = order()
        d = push.models.Delivery
        waiting = db.session.scalar(
            sa.select(d).where(d.message_id == newer.id, d.installation_id == iphone)
        )
        assert waiting.status == "queued"
        caught = activities.queue_catch_up(push.state, iphone, older)
        [entry] = push.explain(caught.id)
        assert (entry["status"], entry["reason"]) == ("superseded", "superseded")
        db.session.execute(sa.update(d).where(d.id == waiting.id).values(due_at=sa.func.now()))
        db.session.commit()
        push.dispatch_due()
        assert db.session.get(d, waiting.id).status == "sent"
    assert push_fake_apns.live_activities[LIVE_TOKEN].content_state == STATE


def with_a_dead_live_token(service: FakePushService, apns: FakeAPNs) -> str:
    """Alice's devices, her iPhone with a Live Activity token for order 42 that APNs
    says is dead (she ended it); the iPhone's id."""
    iphone = devices(service)["iphone"]
    db.session.add(
        push.models.ActivityToken(
            installation_id=iphone, activity_id="order-42", push_token=LIVE_TOKEN
        )
    )
    db.session.commit()
    apns.unregister(LIVE_TOKEN)
    return str(iphone)


def test_a_dead_live_activity_token_is_dropped_not_the_device(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """The user ended the Live Activity: its token is forgotten, not the device, and
    the state goes to the device at once as the alert its next states go as."""
    with live.app_context():
        iphone = with_a_dead_live_token(push_fake_webpush, push_fake_apns)
        message = order()
        assert (
            db.session.scalar(sa.select(sa.func.count()).select_from(push.models.ActivityToken))
            == 0
        )
        assert db.session.get(push.models.Installation, iphone).status == "active"
        [entry] = [e for e in push.explain(message.id) if e["target"]["kind"] == "apns"]
        assert (entry["status"], entry["attempts"]) == ("sent", 2)
        # the timeline says the token died, not the installation, and what came of it
        [retry] = [e for e in entry["events"] if e["what"] == "retry"]
        assert "answered 410 Gone" in retry["detail"]
        assert retry["detail"].endswith(
            "the Live Activity token is dead (the Live Activity ended on the device, or the "
            "app was reinstalled), so flask-push forgot it; this state goes to the device "
            "again at once, as an ordinary alert."
        )
    again = push_fake_apns.notifications[-1]  # (the fake keeps what it accepted)
    assert again.device_token == IPHONE
    assert again.aps["alert"] == {"title": "Order #42", "body": "Out for delivery"}
    with live.app_context():
        # and so does the next state
        later = order(state={**STATE, "step": 5})
        d = push.models.Delivery
        assert (
            db.session.scalar(
                sa.select(d.status).where(d.message_id == later.id, d.installation_id == iphone)
            )
            == "sent"
        )
    assert push_fake_apns.notifications[-1].device_token == IPHONE


def test_a_dead_tokens_alert_goes_in_the_same_round_when_its_outcome_is_written_alone(
    live: Flask,
    push_fake_webpush: FakePushService,
    push_fake_apns: FakeAPNs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database refused APNs' words for the dead token, so the outcomes were
    written one by one: the alert then waited for a next round, which an inline send
    never makes."""
    record = Dispatcher._record

    def refusing(self: Dispatcher, session: Any, decided: Any, results: Any, *args: Any) -> Any:
        for _, result in results:
            if result.status == "gone" and "Unregistered" in (result.error or ""):
                raise ValueError("a value the database refuses")
        return record(self, session, decided, results, *args)

    monkeypatch.setattr(Dispatcher, "_record", refusing)
    with live.app_context():
        with_a_dead_live_token(push_fake_webpush, push_fake_apns)
        message = order()
        [entry] = [e for e in push.explain(message.id) if e["target"]["kind"] == "apns"]
        assert (entry["status"], entry["attempts"]) == ("sent", 2)
    assert push_fake_apns.notifications[-1].device_token == IPHONE


def test_a_start_to_a_dead_push_to_start_token_goes_to_the_device_as_an_alert(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """The app was reinstalled and its push-to-start token died: the start is not
    lost on that iPhone. The token is forgotten and the start goes as an alert."""
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        db.session.get(push.models.Installation, iphone).push_to_start_token = START_TOKEN
        db.session.commit()
        push_fake_apns.unregister(START_TOKEN)
        started = order("start", attributes_type="OrderAttributes", attributes={"number": 42})
        installation = db.session.get(push.models.Installation, iphone)
        assert (installation.status, installation.push_to_start_token) == ("active", None)
        [entry] = [e for e in push.explain(started.id) if e["target"]["kind"] == "apns"]
        assert entry["status"] == "sent"
        [retry] = [e for e in entry["events"] if e["what"] == "retry"]
        assert "the push-to-start token is dead" in retry["detail"]
    alert = push_fake_apns.notifications[-1]
    assert alert.device_token == IPHONE and "attributes-type" not in alert.aps
    assert alert.aps["alert"]["title"] == "Order #42"


def test_the_timeline_says_where_an_iphones_push_went(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """An operator asking why her lock screen did not update: each attempt on an
    iPhone says whether it went to the Live Activity's own token, the push-to-start
    token, or to the device as an alert (no Live Activity token yet)."""

    def attempt(message: Any) -> str:
        [entry] = [e for e in push.explain(message.id) if e["target"]["kind"] == "apns"]
        return next(e["detail"] for e in entry["events"] if e["what"] == "attempt")

    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        db.session.get(push.models.Installation, iphone).push_to_start_token = START_TOKEN
        db.session.commit()
        started = order("start", attributes_type="OrderAttributes", attributes={"number": 42})
        alerted = order()
        assert attempt(started) == (
            "Attempt 1, to the app's push-to-start token: Apple's push service (APNs) "
            "answered 200 OK."
        )
        assert attempt(alerted) == (
            "Attempt 1, to the device as an alert (no Live Activity token for it yet): "
            "Apple's push service (APNs) answered 200 OK."
        )
    assert register_live_token(live, iphone).status_code == 201
    with live.app_context():
        m = push.models.Message
        [caught] = [x for x in db.session.scalars(sa.select(m)) if x.audience == {"id": iphone}]
        assert attempt(caught).startswith("Attempt 1, to the Live Activity's own token: ")
        # other pushes say nothing of the kind
        [web] = [e for e in push.explain(alerted.id) if e["target"]["kind"] == "webpush"]
        assert web["events"][1]["detail"].startswith("Attempt 1: ")


def test_a_newer_state_supersedes_an_older_one_still_queued(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    with live.app_context():
        browser = devices(push_fake_webpush)["browser"]
        push_fake_webpush.fail_next(503, subscriber=browser, retry_after=600)
        older = order(state={"status": "confirmed", "step": 2, "steps": 5})
        d = push.models.Delivery
        row = db.session.scalar(
            sa.select(d).where(d.message_id == older.id, d.subscription_id.is_not(None))
        )
        assert row.status == "queued"  # waits for its retry
        newer = order()
        db.session.expire_all()
        [entry] = [e for e in push.explain(older.id) if e["target"]["kind"] == "webpush"]
        assert entry["status"] == "superseded" and entry["reason"] == "superseded"
        assert entry["events"][-1]["what"] == "superseded"
        # the retry's time comes: nothing of the older state goes out
        db.session.execute(sa.update(d).where(d.id == row.id).values(due_at=sa.func.now()))
        db.session.commit()
        push.dispatch_due()
        assert db.session.get(d, row.id).status == "superseded"
        shown = live.test_client().get(
            f"/push/messages/{older.id}", headers=as_user("root", admin=True)
        )
        assert shown.get_json()["counts"]["superseded"] == 1
        newer_id = newer.id
    assert [p.json()["messageId"] for p in browser.received] == [newer_id]


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_newer_state_counts_none_that_a_worker_claims_as_it_reads_them(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A worker's claim of the older state's push, committed between the newer call's
    read of what it supersedes and its write: the push was counted as superseded,
    yet the worker held it, left as it was, and counted what it sent. The read locks
    it, so the claim (which skips locked rows) does not take it."""
    app = sending_app(
        PUSH_CATEGORIES={"order_status": {"label": "Order updates", "required": True}},
        PUSH_METRICS=True,
    )
    service = push_fake_webpush
    with app.app_context():
        browser = service.subscribe("alice")
        subscribe(browser, "alice")
        service.fail_next(503, subscriber=browser, retry_after=600)
        older = order(state={"status": "confirmed", "step": 2, "steps": 5})
        make_due(older.id)  # its retry is due, and no worker has claimed it yet
        with a_claim_before("UPDATE push_deliveries SET status") as claimed:
            order()
    scraped = app.test_client().get("/push/metrics").get_data(as_text=True)
    superseded = 'flask_push_deliveries_total{outcome="superseded",provider="webpush"} 1.0'
    assert claimed == [0] and superseded in scraped.splitlines(), (claimed, scraped)


def test_an_operators_retry_of_an_older_state_never_lands_after_a_newer_one(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """The older state failed (400) and the newer one was sent; an operator then
    retries the older message: it is superseded when it comes due, not sent."""
    with live.app_context():
        browser = devices(push_fake_webpush)["browser"]
        push_fake_webpush.fail_next(400, subscriber=browser)
        older = order(body="Step 1", state={"status": "confirmed", "step": 1, "steps": 3})
        newer = order(body="Step 2", state={"status": "preparing", "step": 2, "steps": 3})
        older_id, newer_id = older.id, newer.id
    admin = as_user("root", admin=True)
    client = live.test_client()
    retried = client.post(f"/push/messages/{older_id}/retry", json={}, headers=admin)
    assert retried.status_code == 200, retried.get_json()
    with live.app_context():
        push.dispatch_due()
        [entry] = [e for e in push.explain(older_id) if e["target"]["kind"] == "webpush"]
        assert (entry["status"], entry["reason"]) == ("superseded", "superseded")
        assert [e["what"] for e in entry["events"]][-2:] == ["retry", "superseded"]
    assert [p.json()["messageId"] for p in browser.received] == [newer_id]


def test_a_retried_older_state_never_lands_after_a_newer_one(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """The older state was on the network when the newer one was queued (so it
    could not be superseded then), and the push service asks for it again: it is
    dropped as ``superseded``, never sent after the newer one. (The newer one waits
    for the user's quiet hours, so the order of the answers is certain.)"""
    app = sending_app(
        PUSH_QUEUE="thread",
        PUSH_CATEGORIES={"deliveries": {"label": "Delivery updates"}},
        PUSH_METRICS=True,
    )
    service = push_fake_webpush
    with app.app_context():
        browser = service.subscribe()
        subscribe(browser, "alice")
        service.hold()
        service.fail_next(503, subscriber=browser, retry_after=1)
        older = order(state={"status": "confirmed", "step": 2, "steps": 5}, category="deliveries")
        service.wait_in_flight(1)
        quiet_now()
        newer = order(category="deliveries")
        service.release()
        d = push.models.Delivery
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            db.session.expire_all()
            row = db.session.scalar(sa.select(d).where(d.message_id == older.id))
            if row.status != "queued":
                break
            time.sleep(0.05)
        [entry] = push.explain(older.id)
        assert entry["status"] == "superseded", entry["events"]
        assert [e["what"] for e in entry["events"]][-2:] == ["attempt", "superseded"]
        assert "503" in entry["events"][-2]["detail"]
        [waiting] = push.explain(newer.id)
        assert (waiting["status"], waiting["reason"]) == ("queued", "quiet_hours")
        push.shutdown()
    assert browser.received == []
    # the metrics count what was written: superseded, not the retry that was asked for
    scraped = app.test_client().get("/push/metrics").get_data(as_text=True)
    counted = [
        line for line in scraped.splitlines() if line.startswith("flask_push_deliveries_total")
    ]
    assert counted == [
        'flask_push_deliveries_total{outcome="superseded",provider="webpush"} 1.0'
    ], scraped


def test_a_user_left_out_gets_no_older_state_still_waiting(
    sending_app: Callable[..., Flask], push_fake_fcm: FakeFCM, push_fake_apns: FakeAPNs
) -> None:
    """An order shared with bob, who is in his quiet hours: its start waits for him.
    The order is then unshared (bob left out), updated and delivered. When his quiet
    hours end he gets nothing of it: the start, pushed then, would show an order he no
    longer follows (a push-to-start would begin a Live Activity no later state ever
    reaches) after it was delivered. His timeline says why."""
    app = sending_app(
        PUSH_CATEGORIES={"deliveries": {"label": "Deliveries"}}, **push_fake_apns.app_config()
    )
    with app.app_context():
        phones = [
            push.models.Installation(
                app_id="shop",
                device_token=make_registration_token(),
                device_type="android",
                user_id="bob",
            ),
            push.models.Installation(
                app_id="shop",
                device_token=IPHONE,
                device_type="ios",
                user_id="bob",
                push_to_start_token=START_TOKEN,
            ),
        ]
        db.session.add_all(phones)
        db.session.commit()
        quiet_now("bob")
        start = order(
            "start",
            users=["alice", "bob"],
            category="deliveries",
            attributes_type="OrderAttributes",
            attributes={"number": 42},
        )
        assert {e["reason"] for e in push.explain(start.id, user_id="bob")} == {"quiet_hours"}
        order(category="deliveries")
        order("end", category="deliveries", state={**STATE, "status": "delivered", "step": 5})
        db.session.expire_all()
        entries = push.explain(start.id, user_id="bob")
        assert [(e["status"], e["reason"]) for e in entries] == [("superseded", "left_out")] * 2
        assert entries[0]["detail"].startswith("A newer call of its activity left user bob out")
        push.set_preferences("bob", quiet_hours=None)
        push.dispatch_due()
    assert push_fake_fcm.messages == [] and push_fake_apns.notifications == []


def test_an_operators_retry_sends_no_older_state_to_a_user_left_out(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """bob's browser refused the start (400); a later call leaves him out; an operator
    then retries what failed of the start: bob's push is superseded when it comes due
    (reason ``left_out``), not sent to someone who no longer follows the order."""
    with live.app_context():
        browser = push_fake_webpush.subscribe("bob")
        subscribe(browser, "bob")
        push_fake_webpush.fail_next(400, subscriber=browser)
        start = order("start", users=["alice", "bob"])
        order()
        start_id = start.id
    client = live.test_client()
    retried = client.post(
        f"/push/messages/{start_id}/retry", json={}, headers=as_user("root", admin=True)
    )
    assert retried.status_code == 200, retried.get_json()
    with live.app_context():
        push.dispatch_due()
        [entry] = push.explain(start_id, user_id="bob")
        assert (entry["status"], entry["reason"]) == ("superseded", "left_out")
        assert [e["what"] for e in entry["events"]][-2:] == ["retry", "superseded"]
        assert "left user bob out" in entry["detail"]
    assert browser.received == []


def test_why_a_user_left_out_has_no_delivery_of_a_newer_state(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """An order shared with bob, then a call for alice alone: asked why bob has no
    delivery of the newer states, `flask push explain --user bob` and the HTTP page
    name the call that left him out, not "not in its audience, or no browser"."""
    with live.app_context():
        for user in ("alice", "bob", "cy"):
            subscribe(push_fake_webpush.subscribe(user), user)
        order("start", users=["alice", "bob"])
        left = order(users=["alice", "cy"])
        later = order(users=["alice"])
        ids, at = [left.id, later.id], left.created_at
        assert push.explain(later.id, user_id="bob") == []
    runner, client = live.test_cli_runner(), live.test_client()
    for id in ids:
        shown = runner.invoke(args=["push", "explain", id, "--user", "bob"])
        answer = client.get(
            f"/push/messages/{id}/deliveries?userId=bob", headers=as_user("root", admin=True)
        ).get_json()
        # the time as sentences show it: with its date once the day has turned
        said = {
            f"Message {id} has no deliveries to user bob: a call of its activity order-42 "
            f"left them out at {when} (an activity's users are those of its latest call; "
            "that call's users: alice, cy), so this state was not sent to them."
            for when in (f"{at:%H:%M} UTC", f"{at:%Y-%m-%d %H:%M} UTC")
        }
        assert shown.exit_code == 0 and shown.output.removesuffix("\n") in said, shown.output
        assert answer == {"totalCount": 0, "items": [], "detail": shown.output.strip()}
    # someone never in it is told the generic sentence, as before
    never = runner.invoke(args=["push", "explain", later.id, "--user", "zed"])
    assert "they were not in its audience" in never.output


COURIER_PHONE, COURIER_LIVE_TOKEN = "12" * 32, "34" * 32


def courier_with_a_live_activity(app: Flask, **start: Any) -> str:
    """bob, the courier, is given order-42 with alice (a start with ``start``'s
    values), and follows it on his iPhone's lock screen: the start comes as an alert,
    his app starts a Live Activity, registers its token and is caught up. Returns his
    installation's id."""
    with app.app_context():
        phone = push.models.Installation(
            app_id="shop", device_token=COURIER_PHONE, device_type="ios", user_id="bob"
        )
        db.session.add(phone)
        db.session.commit()
        phone_id = phone.id
        order("start", users=["alice", "bob"], **start)
    registered = app.test_client().post(
        f"/push/installations/{phone_id}/activities",
        json={"activityId": "order-42", "pushToken": COURIER_LIVE_TOKEN},
        headers=as_user("bob"),
    )
    assert registered.status_code in (200, 201), registered.get_json()
    return phone_id


def farewells(installation_id: str) -> list[Any]:
    """The farewells queued to ``installation_id``, oldest first."""
    messages = db.session.scalars(sa.select(push.models.Message).order_by("created_at"))
    return [
        m for m in messages if m.audience == {"id": installation_id} and m.activity.get("farewell")
    ]


def test_a_courier_left_out_has_his_live_activity_ended(
    live: Flask, push_fake_apns: FakeAPNs
) -> None:
    """bob delivers order-42 until the shop gives it to another courier (a call for
    alice and cy). His lock screen stops showing it: his Live Activity is ended on
    the state he last saw (not the new one, which is no longer his to see), without
    an alert, and dismissed at once. Said in his timeline; once only."""
    shown_to_bob = {**STATE, "courier": "bob"}
    phone = courier_with_a_live_activity(live, state=shown_to_bob)
    assert push_fake_apns.live_activities[COURIER_LIVE_TOKEN].content_state == shown_to_bob
    with live.app_context():
        handed_on = order(users=["alice", "cy"], state={**STATE, "courier": "cy"})
        order(users=["alice", "cy"], state={**STATE, "courier": "cy", "step": 5})
        [farewell] = farewells(phone)
        assert farewell.inbox is False and farewell.activity["farewell"] is True
        [entry] = push.explain(farewell.id)
        assert (entry["status"], entry["target"]["userId"]) == ("sent", "bob")
        assert entry["events"][0]["detail"] == (
            "Queued for sending. A farewell: the activity's latest call left this user "
            "out, so their Live Activity ends on its state before that call, without an "
            "alert, and leaves the lock screen."
        )
        assert "to the Live Activity's own token" in entry["events"][1]["detail"]
    stamp = handed_on.activity["timestamp"]
    ended = [n for n in push_fake_apns.notifications if n.device_token == COURIER_LIVE_TOKEN]
    assert [n.aps["event"] for n in ended] == ["update", "end"]  # the catch-up, the end
    assert ended[-1].aps == {
        "timestamp": stamp,
        "event": "end",
        "content-state": shown_to_bob,
        "dismissal-date": stamp,
    }
    assert ended[-1].headers["apns-priority"] == "5"  # no news: Apple's budget is small
    shown = push_fake_apns.live_activities[COURIER_LIVE_TOKEN]
    assert shown.event == "end" and shown.content_state == shown_to_bob
    # the operator's console says what this end is, in the list and on its page
    client, root = live.test_client(), as_user("root", admin=True)
    listed = client.get("/push/console/messages", headers=root).get_data(as_text=True)
    assert listed.count(" farewell</span>") == 1
    page = client.get(f"/push/console/messages/{farewell.id}", headers=root)
    assert "(a farewell: the end of the Live Activity of a user a later call left out" in (
        page.get_data(as_text=True)
    )


def test_a_farewell_that_waits_is_not_superseded_by_the_next_call(
    live: Flask, push_fake_apns: FakeAPNs
) -> None:
    """APNs asks to retry bob's farewell; the order's next state comes before the
    retry. The farewell is still sent then (it is not an older state of his, which
    a newer one replaces), and ends his Live Activity."""
    phone = courier_with_a_live_activity(live)
    push_fake_apns.fail_next(503, "ServiceUnavailable", token=COURIER_LIVE_TOKEN)
    with live.app_context():
        order(users=["alice"])
        [farewell] = farewells(phone)
        farewell_id = farewell.id
        assert push.explain(farewell_id)[0]["status"] == "queued"
        order(users=["alice"], state={**STATE, "step": 5})
        make_due(farewell_id)
        push.dispatch_due()
        [entry] = push.explain(farewell_id)
        assert entry["status"] == "sent", entry
    assert push_fake_apns.live_activities[COURIER_LIVE_TOKEN].event == "end"


def test_an_operators_retry_to_a_phone_that_had_its_farewell_says_left_out(
    live: Flask, push_fake_apns: FakeAPNs
) -> None:
    """A state failed on bob's Live Activity (APNs refused it), he was then left out
    and had his farewell; an operator retries what failed of that state. His push is
    superseded because he was left out, as any user left out is told, not because
    the farewell was "a newer state"."""
    phone = courier_with_a_live_activity(live)
    push_fake_apns.fail_next(400, "BadExpirationDate", token=COURIER_LIVE_TOKEN)
    with live.app_context():
        failed = order(users=["alice", "bob"]).id
        assert push.explain(failed, user_id="bob")[0]["status"] == "failed"
        order(users=["alice"])
        assert push.explain(farewells(phone)[0].id)[0]["status"] == "sent"
    retried = live.test_client().post(
        f"/push/messages/{failed}/retry", json={}, headers=as_user("root", admin=True)
    )
    assert retried.status_code == 200, retried.get_json()
    with live.app_context():
        push.dispatch_due()
        [entry] = push.explain(failed, user_id="bob")
        assert (entry["status"], entry["reason"]) == ("superseded", "left_out")


def test_a_call_that_queues_a_farewell_returns_a_message_read_already(
    live: Flask, push_fake_apns: FakeAPNs
) -> None:
    """The farewell's commit, after the call's, does not expire the call's message:
    it reads once the app context has ended, as every call's does (with nothing to
    read again from a database that may be gone by then)."""
    courier_with_a_live_activity(live)
    with live.app_context():
        message = order(users=["alice"])
    assert (message.activity["event"], message.audience) == ("update", {"users": ["alice"]})


def test_a_farewell_that_cannot_be_queued_is_logged_and_the_call_stands(
    live: Flask, push_fake_apns: FakeAPNs, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The farewells are queued after the call's commit: one that fails is logged,
    and the call stands, its message still readable once the app context has ended
    (as every call's, with nothing more to read from the database)."""
    phone = courier_with_a_live_activity(live)
    import flask_push.sending as sending

    real = sending.queue_message

    def refused(state: Any, audience: Any, *args: Any, **kwargs: Any) -> Any:
        if audience == {"id": phone}:
            raise RuntimeError("the database went away")
        return real(state, audience, *args, **kwargs)

    monkeypatch.setattr(sending, "queue_message", refused)
    with live.app_context():
        message = order(users=["alice"])
        # the call stands: its message, and the activity's new users
        assert db.session.get(push.models.Activity, "order-42").users == ["alice"]
        assert farewells(phone) == []
    assert (message.activity["event"], message.audience) == ("update", {"users": ["alice"]})
    [said] = [r.getMessage() for r in caplog.records if "could not be ended" in r.getMessage()]
    assert said == (
        f"flask-push: the Live Activity of 'bob' on installation {phone}, whom a call of "
        "activity 'order-42' left out, could not be ended (the database went away): "
        "the lock screen shows its state before that call until iOS ends it"
    )


def test_a_farewell_whose_tokens_cannot_be_read_is_logged_and_the_call_stands(
    live: Flask, push_fake_apns: FakeAPNs, caplog: Any
) -> None:
    """The database refuses the look for the Live Activity tokens (here their table is
    gone): said, the session rolled back, and the call stands."""
    courier_with_a_live_activity(live)
    with live.app_context():
        db.session.execute(sa.text("ALTER TABLE push_activity_tokens RENAME TO moved_away"))
        db.session.commit()
        try:
            message = order(users=["alice"])
            assert message.activity["event"] == "update"
            assert db.session.get(push.models.Activity, "order-42").users == ["alice"]
        finally:
            db.session.rollback()
            db.session.execute(sa.text("ALTER TABLE moved_away RENAME TO push_activity_tokens"))
            db.session.commit()
    [said] = [r.getMessage() for r in caplog.records if "could not be ended" in r.getMessage()]
    assert said.startswith(
        "flask-push: the Live Activities of 'bob', whom a call of activity 'order-42' left "
        "out, could not be ended ("
    )
    assert "push_activity_tokens" in said


def test_a_courier_back_in_after_his_farewell_gets_the_order_again(
    live: Flask, push_fake_apns: FakeAPNs
) -> None:
    """bob is handed the order again after his farewell ended his Live Activity: its
    token is dead (iOS shows no push to an ended one), so the next state comes to his
    phone as an alert, and his app's new Live Activity is caught up, not left on the
    state it started with."""
    phone = courier_with_a_live_activity(live)
    with live.app_context():
        order(users=["alice"])
        [farewell] = farewells(phone)
        assert push.explain(farewell.id)[0]["status"] == "sent"
        back = order(users=["alice", "bob"], state={**STATE, "courier": "bob", "step": 5})
        tokens = db.session.scalars(sa.select(push.models.ActivityToken.push_token)).all()
        assert COURIER_LIVE_TOKEN not in tokens
        [entry] = push.explain(back.id, user_id="bob")
        assert entry["status"] == "sent"
    alert = push_fake_apns.notifications[-1]
    assert (alert.device_token, alert.push_type) == (COURIER_PHONE, "alert")
    new_token = "56" * 32
    registered = live.test_client().post(
        f"/push/installations/{phone}/activities",
        json={"activityId": "order-42", "pushToken": new_token},
        headers=as_user("bob"),
    )
    assert registered.status_code == 201, registered.get_json()
    caught = push_fake_apns.live_activities[new_token]
    assert caught.content_state == {**STATE, "courier": "bob", "step": 5}


def test_an_end_an_operator_cancelled_may_be_called_again(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """An `end` still waiting (APNs asked for a retry) is cancelled. The call had
    ended the activity, so every later call, an `end` too, was refused
    (`activity_ended`), and a retry of the cancelled message as well: nothing could
    end the Live Activity, which showed "Out for delivery" until iOS timed it out."""
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        db.session.add(
            push.models.ActivityToken(
                installation_id=iphone, activity_id="order-42", push_token=LIVE_TOKEN
            )
        )
        db.session.commit()
        order("start")
        push_fake_apns.fail_next(503, "ServiceUnavailable", token=LIVE_TOKEN)
        ended = order("end", state={**STATE, "status": "delivered", "step": 5})
        push.cancel(ended.id)
        assert push_fake_apns.live_activities[LIVE_TOKEN].event == "update"  # still on
        with pytest.raises(ValidationError) as refused:
            order(state=STATE)  # an update: it was ended
        assert refused.value.code == "activity_ended"
        order("end", state={**STATE, "status": "delivered", "step": 5})
        assert push_fake_apns.live_activities[LIVE_TOKEN].event == "end"
        with pytest.raises(ValidationError) as refused:
            order("end")  # that one was not cancelled
        assert refused.value.code == "activity_ended"


def revive_with_a_live_activity(live: Flask, iphone: str) -> None:
    """alice's app PATCHes a fresh device token for its dead iPhone, then starts a Live
    Activity and registers its token (LIVE_TOKEN)."""
    client, alice = live.test_client(), as_user("alice")
    patched = client.patch(
        f"/push/installations/{iphone}", json={"deviceToken": "9a" * 32}, headers=alice
    )
    assert patched.get_json()["status"] == "active"
    registered = client.post(
        f"/push/installations/{iphone}/activities",
        json={"activityId": "order-42", "pushToken": LIVE_TOKEN},
        headers=alice,
    )
    assert registered.status_code == 201


def test_a_revived_iphone_is_caught_up_with_the_latest_state_not_the_one_refused(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """The iPhone's device token died (410) on "confirmed", so it was sent none of
    the newer states. Its app then PATCHed a fresh device token, started a Live
    Activity and registered its token: the catch-up sent "confirmed", the state that
    never arrived, and the lock screen went back in time until the next call."""
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        order("start", state={"status": "placed", "step": 1, "steps": 5})
        push_fake_apns.unregister(IPHONE)
        order(state={"status": "confirmed", "step": 2, "steps": 5})
        order(state=STATE)  # the latest: the iPhone is dead by now
    revive_with_a_live_activity(live, iphone)
    assert push_fake_apns.live_activities[LIVE_TOKEN].content_state == STATE


def test_a_revived_iphone_is_not_caught_up_with_a_state_an_operator_cancelled(
    live: Flask, push_fake_webpush: FakePushService, push_fake_apns: FakeAPNs
) -> None:
    """The newest state waited for a retry on alice's browser, and an operator
    cancelled it: it was meant to reach no one. Her iPhone, dead since an older state
    and revived now, is caught up with the newest state that was not cancelled."""
    with live.app_context():
        iphone = devices(push_fake_webpush)["iphone"]
        order("start", state={"status": "placed", "step": 1, "steps": 5})
        push_fake_apns.unregister(IPHONE)
        order(state=STATE)  # the iPhone dies on it
        push_fake_webpush.fail_next(503, retry_after=3600)
        cancelled = order(state={**STATE, "status": "delayed", "step": 3})
        assert push.cancel(cancelled.id)
        assert db.session.get(push.models.Message, cancelled.id).cancelled_at is not None
    revive_with_a_live_activity(live, iphone)
    assert push_fake_apns.live_activities[LIVE_TOKEN].content_state == STATE


def test_a_token_posted_again_after_its_farewell_is_still_forgotten(
    live: Flask, push_fake_apns: FakeAPNs
) -> None:
    """bob's app posts its Live Activity token at each launch, the same one after his
    farewell ended that Live Activity. Taken as one registered anew, it was kept when
    he was handed the order back: his next state went to the ended Live Activity,
    and his lock screen showed nothing."""
    phone = courier_with_a_live_activity(live)
    with live.app_context():
        order(users=["alice"])
        [farewell] = farewells(phone)
        assert push.explain(farewell.id)[0]["status"] == "sent"
    again = live.test_client().post(
        f"/push/installations/{phone}/activities",
        json={"activityId": "order-42", "pushToken": COURIER_LIVE_TOKEN},
        headers=as_user("bob"),
    )
    assert again.status_code == 200  # the same one: nothing new
    with live.app_context():
        order(users=["alice", "bob"], state={**STATE, "courier": "bob", "step": 5})
        tokens = db.session.scalars(sa.select(push.models.ActivityToken.push_token)).all()
    assert COURIER_LIVE_TOKEN not in tokens
    alert = push_fake_apns.notifications[-1]
    assert (alert.device_token, alert.push_type) == (COURIER_PHONE, "alert")


def test_a_courier_back_in_before_his_farewell_went_keeps_his_live_activity(
    live: Flask, push_fake_apns: FakeAPNs
) -> None:
    """bob's farewell waits for a retry when he is handed the order again: it is
    superseded, his Live Activity goes on, and the new state goes to it."""
    phone = courier_with_a_live_activity(live)
    push_fake_apns.fail_next(503, "ServiceUnavailable", token=COURIER_LIVE_TOKEN)
    with live.app_context():
        order(users=["alice"])
        [farewell] = farewells(phone)
        order(users=["alice", "bob"], state={**STATE, "step": 5})
        [entry] = push.explain(farewell.id)
        assert entry["status"] == "superseded"
    shown = push_fake_apns.live_activities[COURIER_LIVE_TOKEN]
    assert (shown.event, shown.content_state["step"]) == ("update", 5)


def test_a_farewell_due_after_its_user_is_back_in_is_not_sent(
    sending_app: Callable[..., Flask], push_fake_apns: FakeAPNs
) -> None:
    """bob's farewell waits for a retry; he turns the order updates off on his
    phone, then is handed the order again (so the new state, held back, supersedes
    nothing). When the farewell comes due, he follows the order again: it is not
    sent, and his Live Activity is not ended under him."""
    app = sending_app(
        PUSH_CATEGORIES={"order_status": {"label": "Order updates"}},
        **push_fake_apns.app_config(),
    )
    phone = courier_with_a_live_activity(app)
    push_fake_apns.fail_next(503, "ServiceUnavailable", token=COURIER_LIVE_TOKEN)
    with app.app_context():
        order(users=["alice"])
        [farewell] = farewells(phone)
        push.set_preferences("bob", categories={"order_status": {"mobile": False}})
        order(users=["alice", "bob"])
        make_due(farewell.id)
        push.dispatch_due()
        [entry] = push.explain(farewell.id)
        assert (entry["status"], entry["reason"]) == ("superseded", "superseded")
    assert push_fake_apns.live_activities[COURIER_LIVE_TOKEN].event == "update"


def test_a_newer_state_the_user_will_not_get_supersedes_nothing(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A newer state held back by the policy supersedes nothing. Here the user turned
    the channel off meanwhile, which ended the older one, waiting for the end of the
    quiet hours, already: it says so, not that a newer state replaced it."""
    app = sending_app(PUSH_CATEGORIES={"deals": {"label": "Deals"}})
    with app.app_context():
        subscribe(push_fake_webpush.subscribe(), "alice")
        quiet_now()
        older = push.activity("deal-1", users=["alice"], title="Deal", category="deals")
        push.set_preferences("alice", categories={"deals": {"web": False}})
        newer = push.activity("deal-1", users=["alice"], title="Deal, updated", category="deals")
        for message in (older, newer):
            [held] = push.explain(message.id)
            assert (held["status"], held["reason"]) == ("suppressed", "opted_out")


def test_a_newer_state_is_not_capped_by_the_one_it_replaces(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """The older state still waiting does not count against the daily cap of the
    newer one, which takes its place: one push either way, and the newest."""
    app = sending_app(PUSH_CATEGORIES={"deals": {"label": "Deals", "max_per_day": 1}})
    with app.app_context():
        subscribe(push_fake_webpush.subscribe(), "alice")
        quiet_now()
        states = [
            push.activity("deal-1", users=["alice"], title=f"Deal {n}", category="deals")
            for n in range(3)
        ]
        assert [push.explain(m.id)[0]["status"] for m in states] == ["superseded"] * 2 + ["queued"]
        other = push.send(users=["alice"], title="Another deal", category="deals")
        assert push.explain(other.id)[0]["reason"] == "frequency_cap"


def test_the_inbox_progress_follows_each_state(live: Flask) -> None:
    """The item's progress comes from the latest state's step and steps: a state
    without them clears it, rather than leaving an older state's bar."""
    with live.app_context():
        order("start", state={"status": "placed", "step": 1, "steps": 5})
        [item] = push.search("alice").items
        assert item.progress == {"total": 5, "processed": 1}
        order(state={"status": "driver_nearby"})
        [item] = push.search("alice").items
        assert item.progress is None
        i = push.models.InboxItem
        assert db.session.scalar(sa.select(sa.func.count()).where(i.progress.is_(None))) == 1
        assert item.data["activity"]["state"] == {"status": "driver_nearby"}


def test_the_inbox_item_shows_the_latest_state_alone(live: Flask) -> None:
    """Each state's body and url replace the previous state's, and a state without
    them clears them, as its push has none: the bell never shows "shipped" beside
    the link to pay of the state before."""
    with live.app_context():
        order("start", title="Order #42", body="Placed, pay now", url="/pay/42")
        order(title="Order #42 shipped", body=None, url=None)
        [item] = push.search("alice").items
        assert (item.title, item.body, item.url) == ("Order #42 shipped", None, None)
        order(title="Order #42 nearby", body="Your courier is close", url="/orders/42")
        [item] = push.search("alice").items
        assert (item.title, item.body, item.url) == (
            "Order #42 nearby",
            "Your courier is close",
            "/orders/42",
        )


def test_a_call_without_a_state_keeps_the_last_one(
    live: Flask,
    push_fake_webpush: FakePushService,
    push_fake_fcm: FakeFCM,
    push_fake_apns: FakeAPNs,
) -> None:
    """An ``end`` (or an update of the words alone) given no ``state`` shows the
    activity's last state: an empty ``content-state`` would not decode into the
    app's ContentState, so the iPhone would drop the push and keep showing "out for
    delivery" on its lock screen for hours after the order arrived."""
    with live.app_context():
        mine = devices(push_fake_webpush)
        order("start")
    assert register_live_token(live, mine["iphone"]).status_code == 201
    with live.app_context():
        ended = order("end", title="Order #42 delivered", body=None, state=None)
        assert ended.activity["state"] == STATE
        [item] = push.search("alice").items
        assert item.progress == {"total": 5, "processed": 4}
        assert item.data["activity"]["state"] == STATE
        [(_, said)] = [e for e in events("activity:order-42") if e[1]["event"] == "end"]
        assert said["state"] == STATE
    shown = push_fake_apns.live_activities[LIVE_TOKEN]
    assert (shown.event, shown.content_state) == ("end", STATE)
    [browser_end] = [p.json() for p in mine["browser"].received][-1:]
    assert browser_end["activity"]["state"] == STATE
    android = push_fake_fcm.messages[-1].message["data"]["activity"]
    assert json.loads(android)["state"] == STATE


def test_timestamps_only_grow_and_the_end_is_the_end(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    with live.app_context():
        devices(push_fake_webpush)
        stamps = [order("start").activity["timestamp"], order().activity["timestamp"]]
        stamps.append(order("end", dismiss_at=None).activity["timestamp"])
        assert stamps == sorted(set(stamps))  # strictly growing, even within one second
        messages = db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Message))
        with pytest.raises(ValidationError) as raised:
            order()
        assert (raised.value.code, raised.value.field) == ("activity_ended", "id")
        assert (
            db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Message))
            == messages
        )


def test_first_calls_at_once_make_one_activity(live: Flask) -> None:
    """Calls that find no activity yet, at once (a start and an early update), all
    succeed: one row, one inbox item, timestamps still strictly growing."""
    import threading

    start = threading.Barrier(4)
    stamps: list[int] = []
    failures: list[BaseException] = []

    def caller(event: str) -> None:
        with live.app_context():
            start.wait()
            try:
                stamps.append(order(event).activity["timestamp"])
            except BaseException as error:  # reported below, with the others
                failures.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=caller, args=(e,)) for e in ["start"] + ["update"] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(set(stamps)) == 4
    with live.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Activity)) == 1
        assert [i.id for i in push.search("alice").items] == ["order-42"]


def test_an_activity_made_since_the_lookup_is_updated(
    live: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The losing side of that race, made certain: the lookup misses the row
    another call committed meanwhile; the call goes again, as an update."""
    with live.app_context():
        first = order("start").activity["timestamp"]
        db.session.remove()
        session = db.session()
        real_get = session.get
        missed: list[Any] = []

        def get_missing_once(model: Any, *args: Any, **kwargs: Any) -> Any:
            if model is push.models.Activity and not missed:
                missed.append(model)
                return None
            return real_get(model, *args, **kwargs)

        monkeypatch.setattr(session, "get", get_missing_once)
        second = order(body="Packed").activity["timestamp"]
        assert missed and second > first
        assert db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Activity)) == 1
        assert [i.body for i in push.search("alice").items] == ["Packed"]


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"event": "pause"}, "event"),
        ({"users": []}, "users"),
        ({"state": {"eta": float("nan")}}, "state"),
        ({"attributes": {"n": 1}}, "attributesType"),
        ({"attributes_type": "OrderAttributes", "attributes": {"n": 1}}, "attributes"),
        # a push-to-start without a content-state starts nothing on the iPhone
        (
            {
                "event": "start",
                "attributes_type": "OrderAttributes",
                "attributes": {},
                "state": None,
            },
            "state",
        ),
        ({"category": "offers"}, "category"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"title": " \n "}, "title"),
    ],
)
def test_bad_calls_are_refused_and_write_nothing(
    live: Flask, given: dict[str, Any], field: str
) -> None:
    with live.app_context():
        with pytest.raises(ValidationError) as raised:
            order(**given)
        assert raised.value.field == field, raised.value
        assert db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Activity)) == 0
        with pytest.raises(ValidationError):
            push.activity("bad id!", users=["alice"], title="x")


def test_activity_tokens_are_checked(live: Flask, push_fake_webpush: FakePushService) -> None:
    client = live.test_client()
    with live.app_context():
        mine = devices(push_fake_webpush)
        android = db.session.scalar(
            sa.select(push.models.Installation.id).where(
                push.models.Installation.device_type == "android"
            )
        )
    url = f"/push/installations/{mine['iphone']}/activities"
    alice = as_user("alice")
    bad = client.post(url, json={"activityId": "order-42", "pushToken": "xyz"}, headers=alice)
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "pushToken"
    other = client.post(
        url, json={"activityId": "order-42", "pushToken": LIVE_TOKEN}, headers=as_user("bob")
    )
    assert other.status_code == 404
    not_ios = client.post(
        f"/push/installations/{android}/activities",
        json={"activityId": "order-42", "pushToken": LIVE_TOKEN},
        headers=alice,
    )
    assert not_ios.status_code == 400 and not_ios.get_json()["error"]["field"] == "pushToken"
    start = client.patch(
        f"/push/installations/{android}", json={"pushToStartToken": START_TOKEN}, headers=alice
    )
    assert start.status_code == 400
    assert start.get_json()["error"]["field"] == "pushToStartToken"


def test_a_live_activity_token_registered_twice_at_once_is_one_row(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """ActivityKit hands the app a token and a refreshed one at once: the second
    request to insert the activity's row finds the first one's made since it looked,
    and replaces its token, instead of answering 409 (which its document never says)."""
    client = live.test_client()
    with live.app_context():
        mine = devices(push_fake_webpush)
    url = f"/push/installations/{mine['iphone']}/activities"
    alice = as_user("alice")
    raced, started = [], []

    def other_request_first(session: Any, flush_context: Any, instances: Any) -> None:
        # between this request's look for the row and its insert, the other request
        # (a thread, and so an app context and a session, of its own) makes it
        token_rows = [r for r in session.new if isinstance(r, push.models.ActivityToken)]
        if started or not token_rows:
            return
        started.append(True)
        body = {"activityId": "order-42", "pushToken": LIVE_TOKEN}
        other = threading.Thread(
            target=lambda: raced.append(client.post(url, json=body, headers=alice))
        )
        other.start()
        other.join()

    refreshed = "ef" * 32
    sa.event.listen(sa.orm.Session, "before_flush", other_request_first)
    try:
        response = client.post(
            url, json={"activityId": "order-42", "pushToken": refreshed}, headers=alice
        )
    finally:
        sa.event.remove(sa.orm.Session, "before_flush", other_request_first)
    assert [r.status_code for r in raced] == [201]
    assert response.status_code == 200, response.get_json()
    with live.app_context():
        rows = db.session.scalars(sa.select(push.models.ActivityToken)).all()
        assert [(row.activity_id, row.push_token) for row in rows] == [("order-42", refreshed)]


def test_an_installation_deleted_before_the_retry_of_its_token_is_not_found(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """Two registrations of a token at once, and the installation deleted between the
    loser's conflict and its retry: the retry finds no installation and answers 404
    (as a request after the delete does), not a 500 for the row gone under it."""
    client = live.test_client()
    with live.app_context():
        mine = devices(push_fake_webpush)
    iphone = f"/push/installations/{mine['iphone']}"
    alice = as_user("alice")
    others: list[Any] = []
    this_request = threading.current_thread()

    def in_a_thread(request: Callable[[], Any]) -> None:
        # another request: a thread, and so an app context and a session, of its own
        other = threading.Thread(target=lambda: others.append(request()))
        other.start()
        other.join()

    def other_token_first(session: Any, flush_context: Any, instances: Any) -> None:
        if threading.current_thread() is not this_request or others:
            return
        if any(isinstance(row, push.models.ActivityToken) for row in session.new):
            body = {"activityId": "order-42", "pushToken": LIVE_TOKEN}
            in_a_thread(lambda: client.post(f"{iphone}/activities", json=body, headers=alice))

    def then_deleted(session: Any) -> None:
        # this request's conflict, rolled back: the retry comes next
        if threading.current_thread() is this_request and len(others) == 1:
            in_a_thread(lambda: client.delete(iphone, headers=alice))

    sa.event.listen(sa.orm.Session, "before_flush", other_token_first)
    sa.event.listen(sa.orm.Session, "after_rollback", then_deleted)
    try:
        response = client.post(
            f"{iphone}/activities",
            json={"activityId": "order-42", "pushToken": "ef" * 32},
            headers=alice,
        )
    finally:
        sa.event.remove(sa.orm.Session, "before_flush", other_token_first)
        sa.event.remove(sa.orm.Session, "after_rollback", then_deleted)
    assert [r.status_code for r in others] == [201, 204]
    assert response.status_code == 404, response.get_json()
    assert response.get_json()["error"]["code"] == "not_found"
    with live.app_context():
        assert db.session.scalars(sa.select(push.models.ActivityToken)).all() == []


def test_a_state_too_large_for_a_push_is_refused_and_nothing_is_written(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    with live.app_context():
        devices(push_fake_webpush)
        with pytest.raises(PayloadError) as raised:
            order(state={"note": "x" * 4000})
        # the state is what made it too large, and the message says so
        assert "Shorten the body or the activity's state, or move" in str(raised.value)
        for model in (push.models.Activity, push.models.Message, push.models.InboxItem):
            assert db.session.scalar(sa.select(sa.func.count()).select_from(model)) == 0
