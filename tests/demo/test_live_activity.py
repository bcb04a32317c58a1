"""The demo's orders as live activities, server side: each status change is one
``push.activity`` message; the shopper's inbox keeps one item per order with its
progress; her iPhone gets the start by its push-to-start token, registers the
activity's own token (as the Phones page's simulated app does) and then shows the
newest content-state the fake APNs received; her Android phone shows one
notification per order; a state superseded while queued is counted and breaks
nothing. The deliveries go to flask-push's real fake FCM and APNs services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from demo import create_app, db, push
from demo.models import STATUSES, User
from demo.seed import PASSWORD, seed
from flask_push.testing import FakeAPNs, FakeFCM
from flask_push.testing.fcm import make_registration_token

from conftest import close_app

TOPIC = "com.example.freshcart"
DEVICE = "a4" * 32
PUSH_TO_START = "5a" * 80
LIVE_TOKEN = "1e" * 80
KEYS = [key for key, _ in STATUSES]


@pytest.fixture
def shop(tmp_path: Path, push_fake_apns: FakeAPNs, push_fake_fcm: FakeFCM) -> Iterator[Any]:
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.sqlite'}",
            "PUSH_QUEUE": "inline",
            "DEMO_APP_ID": TOPIC,
            **push_fake_apns.app_config(topic=TOPIC),
            **push_fake_fcm.app_config(),
        }
    )
    app.instance_path = str(tmp_path / "instance")
    app.extensions["demo_fakes"] = {"fcm": push_fake_fcm, "apns": push_fake_apns}
    with app.app_context():
        db.create_all()
        seed()
    yield app
    close_app(app)


def login(app: Any, email: str) -> Any:
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 302, response.text
    return client


def phones(client: Any) -> dict[str, str]:
    """An iPhone with a push-to-start token and an Android phone, registered as the
    Phones page does."""
    ids = {}
    for kind, token, extra in (
        ("ios", DEVICE, {"pushToStartToken": PUSH_TO_START}),
        ("android", make_registration_token(), {}),
    ):
        answer = client.post(
            "/push/installations",
            json={"appId": TOPIC, "deviceType": kind, "deviceToken": token, **extra},
        )
        assert answer.status_code == 201, answer.text
        ids[kind] = answer.get_json()["id"]
    return ids


def place_order(client: Any) -> int:
    client.post("/cart", data={"product_id": 1, "quantity": 2})
    response = client.post("/checkout")
    assert response.status_code == 302
    return int(response.location.rsplit("/", 1)[1])


def activity_messages(order_id: int) -> list[Any]:
    m = push.models.Message
    return list(
        db.session.scalars(
            sa.select(m).where(m.activity_id == f"order-{order_id}").order_by(m.created_at, m.id)
        )
    )


def alice_id() -> str:
    user = db.session.scalar(sa.select(User).where(User.email == "alice@example.com"))
    assert user is not None
    return user.push_id


def screen(client: Any, kind: str) -> dict[str, Any]:
    """What the Phones page's refresh says about the shopper's phone of ``kind``."""
    from demo import phones as simulated

    with client.application.test_request_context():
        return next(s for s in simulated.screens(alice_id()) if s["kind"] == kind)


def test_an_orders_five_states_are_one_activity_on_every_screen(
    shop: Any, push_fake_apns: FakeAPNs, push_fake_fcm: FakeFCM
) -> None:
    alice, staff = login(shop, "alice@example.com"), login(shop, "staff@example.com")
    mine = phones(alice)
    order_id = place_order(alice)
    activity = f"order-{order_id}"

    # placing it starts the activity: the iPhone by its push-to-start token
    [start] = push_fake_apns.notifications
    assert (start.device_token, start.push_type) == (PUSH_TO_START, "liveactivity")
    assert start.topic == f"{TOPIC}.push-type.liveactivity"
    assert start.aps["event"] == "start" and start.aps["attributes-type"] == "OrderAttributes"
    assert start.aps["attributes"] == {"orderId": order_id, "total": "$10.98"}
    assert start.aps["content-state"]["status"] == "placed"
    assert start.aps["alert"]["title"] == f"Order #{order_id}: Placed"

    # the Phones page's refresh: the started activity wants a token of its own, which
    # the simulated app registers through flask-push's endpoint
    refreshed = alice.get("/devices/received.json").get_json()
    assert refreshed["register"] == [{"installation": mine["ios"], "activityId": activity}]
    assert f'data-live-activity="{activity}"' in refreshed["screens"]
    registered = alice.post(
        f"/push/installations/{mine['ios']}/activities",
        json={"activityId": activity, "pushToken": LIVE_TOKEN},
    )
    assert registered.status_code == 201, registered.text
    assert alice.get("/devices/received.json").get_json()["register"] == []

    for step, status in enumerate(KEYS, start=1):
        if step > 1:
            assert staff.post(f"/staff/orders/{order_id}/advance").status_code == 302
        with shop.app_context():
            messages = activity_messages(order_id)
            # one message per state, of the order's activity
            assert len(messages) == step
            newest = messages[-1]
            assert newest.category == "order_status"
            assert newest.activity["state"]["status"] == status
            assert newest.activity["event"] == (
                "start" if step == 1 else "end" if step == 5 else "update"
            )
            # the inbox: one item for the order, its progress the step
            items = push.search(alice_id()).items
            assert [item.id for item in items] == [activity]
            assert items[0].progress == {"total": 5, "processed": step}
            assert items[0].title == f"Order #{order_id}: {dict(STATUSES)[status]}"
        # the iPhone's Live Activity shows the newest content-state
        if step > 1:
            shown = push_fake_apns.live_activities[LIVE_TOKEN]
            assert shown.content_state["status"] == status
            assert shown.content_state["step"] == step and shown.content_state["steps"] == 5
            assert ("eta" in shown.content_state) == (status != "delivered")
            assert shown.event == ("end" if step == 5 else "update")
        [card] = screen(alice, "ios")["activities"]
        assert (card["id"], card["status"], card["progress"]["step"]) == (activity, status, step)
        assert card["updates"] == step and card["ended"] == (step == 5)
        # Android: one notification for the order, the newest state
        [note] = screen(alice, "android")["notifications"]
        assert note["tag"] == activity and note["updates"] == step
        assert note["title"] == f"Order #{order_id}: {dict(STATUSES)[status]}"
        assert note["progress"]["step"] == step

    # every Android push carried the order's tag and collapse key
    android = [m.android for m in push_fake_fcm.messages]
    assert {a["notification"]["tag"] for a in android} == {activity}
    assert {a["collapse_key"] for a in android} == {activity}
    # the iPhone got Live Activity pushes only: the start, then four by its own token
    assert [n.device_token for n in push_fake_apns.notifications] == [PUSH_TO_START] + [
        LIVE_TOKEN
    ] * 4
    assert push_fake_apns.rejections == []
    stamps = [n.aps["timestamp"] for n in push_fake_apns.notifications]
    assert stamps == sorted(set(stamps))
    ended = push_fake_apns.live_activities[LIVE_TOKEN]
    assert "dismissal-date" in ended.aps and ended.aps["alert"]["title"].endswith("Delivered")

    # the staff's analytics: each state reached her inbox (one item, updated in place,
    # which the messages page's chart counts once)
    with shop.app_context():
        ids = [m.id for m in activity_messages(order_id)]
    counts = staff.get("/staff/messages/inbox.json", query_string={"id": ids}).get_json()
    item = f"order-{order_id}"
    assert counts == {id: {"inbox": 1, "read": 0, "heldBack": 0, "item": item} for id in ids}

    # delivered is the end: another advance is no move, and nothing more is sent
    again = staff.post(f"/staff/orders/{order_id}/advance", data={"status": "preparing"})
    assert again.status_code == 302
    with shop.app_context():
        assert len(activity_messages(order_id)) == 5
    # the ended activity needs no token
    assert alice.get("/devices/received.json").get_json()["register"] == []


def test_an_iphone_without_live_activities_gets_one_alert_per_order(
    shop: Any, push_fake_apns: FakeAPNs
) -> None:
    alice, staff = login(shop, "alice@example.com"), login(shop, "staff@example.com")
    answer = alice.post(
        "/push/installations", json={"appId": TOPIC, "deviceType": "ios", "deviceToken": DEVICE}
    )
    assert answer.status_code == 201
    order_id = place_order(alice)
    staff.post(f"/staff/orders/{order_id}/advance")
    alerts = push_fake_apns.notifications
    assert [n.push_type for n in alerts] == ["alert", "alert"]
    assert {n.headers["apns-collapse-id"] for n in alerts} == {f"order-{order_id}"}
    shown = screen(alice, "ios")
    assert shown["activities"] == []
    [note] = shown["notifications"]
    assert note["title"] == f"Order #{order_id}: Confirmed" and note["updates"] == 2


def test_a_catch_up_to_a_late_activity_token_writes_no_inbox_item(
    shop: Any, push_fake_apns: FakeAPNs
) -> None:
    """The order moved on before the iPhone registered its Live Activity's own token (the
    Phones page was not open): flask-push sends the newest state again to that token
    alone, as a message of the activity without an inbox item. The staff's Messages
    page counts no inbox for it, where it said "1 inbox" (the order's item, which the
    states before it wrote)."""
    alice, staff = login(shop, "alice@example.com"), login(shop, "staff@example.com")
    ios = phones(alice)["ios"]
    order_id = place_order(alice)
    staff.post(f"/staff/orders/{order_id}/advance")
    registered = alice.post(
        f"/push/installations/{ios}/activities",
        json={"activityId": f"order-{order_id}", "pushToken": LIVE_TOKEN},
    )
    assert registered.status_code == 201, registered.text
    assert push_fake_apns.live_activities[LIVE_TOKEN].content_state["status"] == "confirmed"
    with shop.app_context():
        placed, confirmed, caught_up = activity_messages(order_id)
        assert (caught_up.inbox, confirmed.inbox) == (False, True)
        ids = [placed.id, confirmed.id, caught_up.id]
    counts = staff.get("/staff/messages/inbox.json", query_string={"id": ids}).get_json()
    # the catch-up wrote no inbox item, and no shopper's settings held one back
    item = f"order-{order_id}"  # the states' one item; the catch-up wrote none of its own
    assert counts == {
        placed.id: {"inbox": 1, "read": 0, "heldBack": 0, "item": item},
        confirmed.id: {"inbox": 1, "read": 0, "heldBack": 0, "item": item},
        caught_up.id: {"inbox": 0, "read": 0, "heldBack": 0, "item": caught_up.id},
    }


def test_an_order_delivered_before_the_iphone_registered_ends_its_live_activity(
    shop: Any, push_fake_apns: FakeAPNs
) -> None:
    """The Phones page (the simulated app) was closed while the order went from placed
    to delivered: the iPhone's Live Activity showed "Placed" for ever beside the alert
    "Delivered", since an ended activity was never registered. The app registers it
    when the page opens, as it would have at the start, and flask-push's catch-up
    ends it on the phone with the order's last state."""
    alice, staff = login(shop, "alice@example.com"), login(shop, "staff@example.com")
    ios = phones(alice)["ios"]
    order_id = place_order(alice)
    activity = f"order-{order_id}"
    for _ in KEYS[1:]:
        assert staff.post(f"/staff/orders/{order_id}/advance").status_code == 302
    [card] = screen(alice, "ios")["activities"]
    assert card["status"] == "placed" and not card["ended"]

    wanted = alice.get("/devices/received.json").get_json()["register"]
    assert wanted == [{"installation": ios, "activityId": activity}]
    registered = alice.post(
        f"/push/installations/{ios}/activities",
        json={"activityId": activity, "pushToken": LIVE_TOKEN},
    )
    assert registered.status_code == 201, registered.text
    shown = push_fake_apns.live_activities[LIVE_TOKEN]
    assert (shown.event, shown.content_state["status"]) == ("end", "delivered")
    [card] = screen(alice, "ios")["activities"]
    assert (card["status"], card["ended"], card["ownToken"]) == ("delivered", True, True)
    assert alice.get("/devices/received.json").get_json()["register"] == []


def test_a_state_superseded_while_queued_is_counted_and_breaks_nothing(
    shop: Any, push_fake_fcm: FakeFCM
) -> None:
    alice, staff = login(shop, "alice@example.com"), login(shop, "staff@example.com")
    android = phones(alice)["android"]
    order_id = place_order(alice)
    # FCM is busy for "Confirmed": it waits for a retry, and "Preparing" comes first
    push_fake_fcm.fail_next(503, "UNAVAILABLE", retry_after=600)
    staff.post(f"/staff/orders/{order_id}/advance")
    staff.post(f"/staff/orders/{order_id}/advance")
    with shop.app_context():
        _placed, confirmed, preparing = activity_messages(order_id)
        d = push.models.Delivery
        status = db.session.scalar(
            sa.select(d.status).where(d.message_id == confirmed.id, d.installation_id == android)
        )
        assert status == "superseded"
        confirmed_id = confirmed.id
    counts = staff.get(f"/push/messages/{confirmed_id}").get_json()["counts"]
    assert counts["superseded"] == 1
    listed = staff.get("/push/messages").get_json()["items"]
    assert [m["counts"]["superseded"] for m in listed] == [0, 1, 0]
    # the staff's analytics page, the shopper's pages and her phones still show
    assert "<dt>superseded</dt>" in staff.get("/staff/messages").text
    for path in ("/devices", "/devices/received.json", f"/orders/{order_id}", "/notifications"):
        assert alice.get(path).status_code == 200, path
    # her Android phone: the placed state, then preparing (never the confirmed one)
    titles = [m.notification["title"] for m in push_fake_fcm.messages]
    assert titles == [f"Order #{order_id}: Placed", f"Order #{order_id}: Preparing"]
    [note] = screen(alice, "android")["notifications"]
    assert note["title"] == f"Order #{order_id}: Preparing" and note["progress"]["step"] == 3


def test_an_old_demo_database_gets_the_live_activity_tables_and_columns(shop: Any) -> None:
    """A database from ``make demo`` before live activities: ``create_tables`` (what
    ``make demo`` runs) adds the tables, columns and index, and orders work."""
    from demo.schema import create_tables

    with shop.app_context():
        with db.engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE push_activities"))
            connection.execute(sa.text("DROP TABLE push_activity_tokens"))
            connection.execute(sa.text("DROP INDEX ix_push_messages_activity_id"))
            connection.execute(sa.text("ALTER TABLE push_messages DROP COLUMN activity_id"))
            connection.execute(sa.text("ALTER TABLE push_messages DROP COLUMN activity"))
            connection.execute(
                sa.text("ALTER TABLE push_installations DROP COLUMN push_to_start_token")
            )
        added = create_tables()
        assert sorted(added) == [
            "ix_push_messages_activity_id",
            "push_installations.push_to_start_token",
            "push_messages.activity",
            "push_messages.activity_id",
        ]
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"push_activities", "push_activity_tokens"} <= tables
        assert create_tables() == []
    alice = login(shop, "alice@example.com")
    phones(alice)
    order_id = place_order(alice)
    with shop.app_context():
        assert len(activity_messages(order_id)) == 1
