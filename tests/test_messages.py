"""``/messages``: sending over HTTP, listing with delivery counts, and click reports."""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_push.dispatch import click_serializer
from flask_push.testing import FakePushService

from conftest import add_subscription, as_user, db, push

ADMIN = as_user("root", admin=True)
SECRET = "test-secret"


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(SECRET_KEY=SECRET)


def setup_subscriptions(app: Flask) -> None:
    with app.app_context():
        add_subscription("alice", ["offers"])
        add_subscription("alice")
        add_subscription("bob")


def send(client: Any, audience: Any = None, headers: Any = ADMIN, **notification: Any) -> Any:
    body = {
        "audience": {"users": ["alice"]} if audience is None else audience,
        "notification": {"title": "Order #42", **notification},
    }
    return client.post("/push/messages", json=body, headers=headers)


def count(app: Flask, model: Any) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def _ahead(**delta: float) -> str:
    """An RFC 3339 time this far from now."""
    return (datetime.now(timezone.utc) + timedelta(**delta)).isoformat()


def error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_json()
    result: dict[str, Any] = response.get_json()["error"]
    return result


def test_admins_only(app: Flask, client: Any) -> None:
    for headers in ({}, as_user("alice")):
        assert error(send(client, headers=headers), 403)["code"] == "forbidden"
        assert error(client.get("/push/messages", headers=headers), 403)["code"] == "forbidden"
        assert client.get("/push/messages/msg_x", headers=headers).status_code == 403
    assert count(app, push.models.Message) == 0


def test_each_audience_shape(app: Flask, client: Any) -> None:
    setup_subscriptions(app)
    expected = [
        ({"users": ["alice", "bob"]}, 3),
        ({"topic": "offers"}, 1),
        ({"query": {"userId": "bob"}}, 1),
        ({"everyone": True}, 3),
    ]
    for audience, recipients in expected:
        response = send(client, audience, body="Out for delivery", url="/orders/42")
        assert response.status_code == 202, response.get_json()
        answer = response.get_json()
        assert set(answer) == {"id", "status", "recipientCount"}
        assert answer["id"].startswith("msg_")
        assert answer["recipientCount"] == recipients
        # sends are suppressed under app.testing, and recorded as sent at once
        assert answer["status"] == "done"
        with app.app_context():
            message = db.session.get(push.models.Message, answer["id"])
            assert set(message.audience) == set(audience)


def test_every_notification_field_reaches_push_send(app: Flask, client: Any) -> None:
    response = send(
        client,
        body="b",
        url="/o/1",
        icon="/i.png",
        image="https://cdn.example/x.png",
        badge=3,
        sound="ding",
        tag="t",
        data={"orderId": 42},
        ttl=60,
        urgency="high",
        collapseKey="order-42",
        inbox=True,
        notifyType="order",
    )
    assert response.status_code == 202, response.get_json()
    shown = client.get(f"/push/messages/{response.get_json()['id']}", headers=ADMIN).get_json()
    assert shown["notification"] == {
        "title": "Order #42",
        "body": "b",
        "url": "/o/1",
        "icon": "/i.png",
        "image": "https://cdn.example/x.png",
        "badge": 3,
        "sound": "ding",
        "tag": "t",
        "data": {"orderId": 42},
        "ttl": 60,
        "urgency": "high",
        "collapseKey": "order-42",
    }
    with app.app_context():
        item = db.session.get(push.models.InboxItem, ("alice", response.get_json()["id"]))
        assert item is not None and item.type == "order"


def test_idempotent_repeat_answers_the_first_message(app: Flask, client: Any) -> None:
    setup_subscriptions(app)
    first = send(client, idempotencyKey="order-42-shipped")
    again = send(client, idempotencyKey="order-42-shipped", body="changed")
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert count(app, push.models.Message) == 1
    assert count(app, push.models.Delivery) == 2


@pytest.mark.parametrize(
    ("audience", "field", "code"),
    [
        ({}, "audience", "invalid_audience"),
        ({"users": ["alice"], "topic": "offers"}, "audience", "invalid_audience"),
        ({"users": ["alice"], "everyone": False}, "audience", "invalid_audience"),
        ({"everyone": False}, "audience.everyone", "invalid_value"),
        ({"everyone": 1}, "audience.everyone", "invalid_value"),  # 1 is not true
        ({"everyone": "true"}, "audience.everyone", "invalid_value"),
        ({"users": "alice"}, "audience.users", "invalid_type"),
        ({"users": {"alice": 1}}, "audience.users", "invalid_type"),
        ({"users": []}, "audience.users", "invalid_value"),
        ({"topic": "no spaces"}, "audience.topic", "invalid_value"),
        ({"query": {"colour": "red"}}, "audience.query.colour", "invalid_value"),
        ({"groups": ["a"]}, "audience.groups", "unknown_field"),
        ("everyone", "audience", "invalid_audience"),
        (None, "audience", "invalid_audience"),
    ],
)
def test_bad_audience(app: Flask, client: Any, audience: Any, field: str, code: str) -> None:
    body: dict[str, Any] = {"notification": {"title": "x"}}
    if audience is not None:
        body["audience"] = audience
    err = error(client.post("/push/messages", json=body, headers=ADMIN), 400)
    assert (err["field"], err["code"]) == (field, code), err
    assert count(app, push.models.Message) == 0


@pytest.mark.parametrize(
    ("notification", "field", "code"),
    [
        ({"title": None}, "notification.title", "required"),
        ({"title": ""}, "notification.title", "invalid_value"),
        # nothing to read on the lock screen: once a 202
        ({"title": "   "}, "notification.title", "invalid_value"),
        ({"title": " \n\t"}, "notification.title", "invalid_value"),
        ({"title": "x" * 256}, "notification.title", "too_long"),
        ({"ttl": -1}, "notification.ttl", "invalid_value"),
        ({"ttl": "60"}, "notification.ttl", "invalid_value"),
        ({"urgency": "asap"}, "notification.urgency", "invalid_value"),
        ({"url": "javascript:alert(1)"}, "notification.url", "invalid_url"),
        # browsers read each as //evil.example: another site
        ({"url": "/\t/evil.example"}, "notification.url", "invalid_url"),
        ({"url": "/\n/evil.example"}, "notification.url", "invalid_url"),
        ({"url": "/\r/evil.example"}, "notification.url", "invalid_url"),
        ({"url": "/orders/\x7f"}, "notification.url", "invalid_url"),
        ({"data": [1]}, "notification.data", "invalid_type"),
        ({"inbox": "yes"}, "notification.inbox", "invalid_type"),
        ({"notifyType": "a b"}, "notification.notifyType", "invalid_value"),
        ({"sendAt": "tomorrow"}, "notification.sendAt", "invalid_value"),
        ({"sendAt": "2030-01-01T09:00:00"}, "notification.sendAt", "invalid_value"),
        ({"sendAt": "2030-02-30T09:00:00Z"}, "notification.sendAt", "invalid_value"),
        ({"sendAt": "9999-12-31T23:59:59-01:00"}, "notification.sendAt", "invalid_value"),
        ({"sendAt": 1893456000}, "notification.sendAt", "invalid_value"),
        ({"colour": "red"}, "notification.colour", "unknown_field"),
        # once a 500 (OverflowError: the send time plus the TTL is past the year 9999)
        ({"sendAt": "9999-12-31T00:00:00Z"}, "notification.sendAt", "invalid_value"),
        ({"sendAt": _ahead(days=366)}, "notification.sendAt", "invalid_value"),
        # once a 500 (a lone surrogate cannot be encoded) or stored (NUL)
        ({"data": {"k": "\ud800"}}, "notification.data", "invalid_value"),
        ({"data": {"\ud800": 1}}, "notification.data", "invalid_value"),
        ({"data": {"k": ["a\x00b"]}}, "notification.data", "invalid_value"),
    ],
)
def test_bad_notification(
    app: Flask, client: Any, notification: dict[str, Any], field: str, code: str
) -> None:
    setup_subscriptions(app)
    err = error(send(client, **{"inbox": True, **notification}), 400)
    assert (err["field"], err["code"]) == (field, code), err
    for model in (push.models.Message, push.models.Delivery, push.models.InboxItem):
        assert count(app, model) == 0


def test_bad_body(client: Any) -> None:
    assert error(send(client, extra=1), 400)["field"] == "notification.extra"
    body = {"audience": {"everyone": True}, "notification": {"title": "x"}, "x": 1}
    assert error(client.post("/push/messages", json=body, headers=ADMIN), 400)["field"] == "x"
    body = {"audience": {"everyone": True}, "notification": "x"}
    err = error(client.post("/push/messages", json=body, headers=ADMIN), 400)
    assert err["field"] == "notification"


def test_oversize_notification_is_400_and_writes_nothing(app: Flask, client: Any) -> None:
    setup_subscriptions(app)
    err = error(send(client, body="é" * 3000, inbox=True), 400)
    assert (err["code"], err["field"]) == ("payload_too_large", "notification")
    for model in (push.models.Message, push.models.Delivery, push.models.InboxItem):
        assert count(app, model) == 0


def test_send_at_in_the_future_is_scheduled(app: Flask, client: Any) -> None:
    setup_subscriptions(app)
    later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=364)
    at = later.astimezone(timezone(timedelta(hours=1))).isoformat()  # "...+01:00"
    response = send(client, sendAt=at)
    assert response.status_code == 202
    answer = response.get_json()
    assert answer["status"] == "scheduled"
    shown = client.get(f"/push/messages/{answer['id']}", headers=ADMIN).get_json()
    assert shown["status"] == "scheduled"
    assert shown["sendAt"] == later.isoformat().replace("+00:00", "Z")
    assert shown["counts"]["queued"] == 2 and shown["counts"]["sent"] == 0
    past = send(client, sendAt="2001-01-01T00:00:00Z").get_json()
    assert past["status"] == "done"


@pytest.mark.parametrize(
    ("written", "micros"),
    [
        ("{day}T09:00:00Z", 0),  # what the refusal proposes; Python 3.10 read no "Z"
        ("{day}T09:00:00.123Z", 123_000),  # JavaScript's toISOString()
        ("{day}T09:00:00.1234567Z", 123_456),  # .NET's round trip: 7 digits
        ("{day}T09:00:00.123456789+00:00", 123_456),  # Go's RFC3339Nano: 9 digits
        ("{day}t09:00:00z", 0),  # RFC 3339 allows either case
        ("{day}T10:00:00.5+01:00", 500_000),
    ],
)
def test_send_at_is_read_in_every_form_rfc_3339_allows(
    client: Any, written: str, micros: int
) -> None:
    day = (datetime.now(timezone.utc) + timedelta(days=30)).date()
    answer = send(client, sendAt=written.format(day=day)).get_json()
    shown = client.get(f"/push/messages/{answer['id']}", headers=ADMIN).get_json()
    at = datetime(day.year, day.month, day.day, 9, microsecond=micros, tzinfo=timezone.utc)
    assert shown["sendAt"] == at.isoformat().replace("+00:00", "Z")


def test_list_newest_first_with_paging(app: Flask, client: Any) -> None:
    setup_subscriptions(app)
    ids = [send(client, body=str(n)).get_json()["id"] for n in range(3)]
    base = datetime(2030, 1, 1, tzinfo=timezone.utc)
    with app.app_context():
        model = push.models.Message
        for n, id in enumerate(ids):  # distinct times, whatever the clock's resolution
            db.session.execute(
                sa.update(model).where(model.id == id).values(created_at=base + timedelta(n))
            )
        db.session.commit()
    page = client.get("/push/messages", headers=ADMIN).get_json()
    assert page["totalCount"] == 3
    assert [item["id"] for item in page["items"]] == ids[::-1]
    first = page["items"][0]
    assert first["createdAt"] == "2030-01-03T00:00:00Z"
    assert first["counts"] == {
        "queued": 0,
        "sent": 2,
        "failed": 0,
        "gone": 0,
        "expired": 0,
        "suppressed": 0,
        "superseded": 0,
        "cancelled": 0,
        "deferred": 0,
        "clicked": 0,
    }
    # the message's own view adds why deliveries failed (nothing here)
    assert client.get(f"/push/messages/{ids[2]}", headers=ADMIN).get_json() == {
        **first,
        "problems": [],
        "moreProblems": None,
    }
    page = client.get("/push/messages?skip=1&take=1", headers=ADMIN).get_json()
    assert page["totalCount"] == 3 and [item["id"] for item in page["items"]] == [ids[1]]
    assert client.get("/push/messages?skip=3", headers=ADMIN).get_json()["items"] == []
    for bad in ("take=0", "take=101", "skip=-1", "take=x"):
        assert error(client.get(f"/push/messages?{bad}", headers=ADMIN), 400)["code"] == (
            "invalid_value"
        )


def test_list_counts_in_one_grouped_query(app: Flask, client: Any) -> None:
    setup_subscriptions(app)
    for _ in range(3):
        send(client, {"everyone": True})
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        page = client.get("/push/messages", headers=ADMIN).get_json()
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert [item["counts"]["sent"] for item in page["items"]] == [3, 3, 3]
    assert len([s for s in statements if "push_deliveries" in s]) == 1


def test_counts_and_status_follow_the_deliveries(app: Flask, client: Any) -> None:
    setup_subscriptions(app)
    id = send(client, {"everyone": True}).get_json()["id"]
    url = f"/push/messages/{id}"
    shown = client.get(url, headers=ADMIN).get_json()
    assert shown["status"] == "done"
    assert shown["counts"]["sent"] == 3 and shown["recipientCount"] == 3
    assert shown["sendAt"] is None

    def set_status(*statuses: str) -> dict[str, Any]:
        with app.app_context():
            model = push.models.Delivery
            rows = db.session.scalars(
                sa.select(model.id).where(model.message_id == id).order_by(model.id)
            ).all()
            for row, status in zip(rows, statuses, strict=True):
                db.session.execute(sa.update(model).where(model.id == row).values(status=status))
            db.session.commit()
        answer: dict[str, Any] = client.get(url, headers=ADMIN).get_json()
        return answer

    shown = set_status("gone", "failed", "sent")
    assert shown["status"] == "done"
    assert shown["counts"] == {
        "queued": 0,
        "sent": 1,
        "failed": 1,
        "gone": 1,
        "expired": 0,
        "suppressed": 0,
        "superseded": 0,
        "cancelled": 0,
        "deferred": 0,
        "clicked": 0,
    }
    assert set_status("queued", "expired", "sent")["status"] == "sending"
    assert set_status("queued", "queued", "queued")["status"] == "queued"
    assert error(client.get("/push/messages/msg_nope", headers=ADMIN), 404)["code"] == ("not_found")


def test_a_message_says_why_deliveries_failed(
    make_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    app = make_app(
        SECRET_KEY="console-secret",
        PUSH_QUEUE="inline",
        PUSH_SUPPRESS_SEND=False,
        PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
    )
    client = app.test_client()
    fine, gone, refused, busy = (push_fake_webpush.subscribe(name) for name in "abcd")
    for subscriber in (fine, gone, refused, busy):
        answer = client.post("/push/subscriptions", json=subscriber.info, headers=as_user("al"))
        assert answer.status_code == 201, answer.get_json()
    gone.expire()
    push_fake_webpush.fail_next(400, subscriber=refused)
    push_fake_webpush.fail_next(503, subscriber=busy, retry_after=600)
    id = send(client, {"users": ["al"]}).get_json()["id"]
    shown = client.get(f"/push/messages/{id}", headers=ADMIN).get_json()
    assert shown["counts"] | {"clicked": 0} == {
        "queued": 1, "sent": 1, "failed": 1, "gone": 1, "expired": 0, "clicked": 0,
        "suppressed": 0, "superseded": 0, "cancelled": 0, "deferred": 0,
    }  # fmt: skip
    problems = {p["status"]: p for p in shown["problems"]}
    assert set(problems) == {"queued", "failed", "gone"}
    assert problems["failed"]["reason"].startswith("400 ")
    assert problems["gone"]["reason"].startswith("the subscription has expired")
    assert problems["queued"]["reason"].startswith("503 ")  # waits for its retry
    assert all(p["count"] == 1 and p["lastAt"].endswith("Z") for p in shown["problems"])
    # beside the service's text, the sentence its delivery says, which the console shows
    deliveries = client.get(f"/push/messages/{id}/deliveries", headers=ADMIN).get_json()
    said = {entry["status"]: entry["detail"] for entry in deliveries["items"]}
    assert {status: p["detail"] for status, p in problems.items()} == {
        status: said[status] for status in problems
    }
    assert problems["failed"]["detail"].startswith("The browser's push service refused it at ")
    page = client.get(f"/push/console/messages/{id}", headers=ADMIN).get_data(as_text=True)
    start = page.index('<ul class="problems">')
    listed = html.unescape(page[start : page.index("</ul>", start)])
    for problem in problems.values():
        assert problem["detail"] in listed
        assert f'<code class="small reason">{problem["code"]}</code>' in listed
    assert problems["gone"]["reason"] not in listed  # the service's words: in the timeline
    # the list stays light: the reasons are in the message's own view only
    listed = client.get("/push/messages", headers=ADMIN).get_json()["items"][0]
    assert "problems" not in listed


def test_problems_are_one_entry_per_cause_and_say_what_was_left_out(app: Flask) -> None:
    now = datetime.now(timezone.utc)
    with app.app_context():
        id = push.send(users=["nobody"], title="Sale").id

        def delivery(status: str, kind: str, reason: str | None, error: str, ago: int) -> None:
            at = now - timedelta(minutes=ago)
            db.session.add(
                push.models.Delivery(
                    message_id=id, kind=kind, status=status, reason=reason, error=error,
                    updated_at=at, due_at=at, expires_at=at + timedelta(days=1), events=[],
                )
            )  # fmt: skip

        # twelve iPhones gone for one cause: APNs puts each token's own time in the text
        for n in range(12):
            since = f"Unregistered (the token is invalid since 2026-05-01 10:{n:02d}:41)"
            delivery("gone", "apns", "unsubscribed", since, 30 + n)
        delivery("failed", "webpush", "rejected", "400 Bad Request", 20)
        delivery("queued", "fcm", "unavailable", "503 Service Unavailable", 10)
        # rows written before deliveries kept a machine reason: one entry per text
        for n in range(10):
            delivery("failed", "webpush", None, f"old failure {n}", 100 + n)
        delivery("failed", "webpush", None, "old failure 9", 120)
        db.session.commit()
    client = app.test_client()
    shown = client.get(f"/push/messages/{id}", headers=ADMIN).get_json()
    keys = ("status", "code", "kind", "count", "reason")
    problems = [{k: p[k] for k in keys} for p in shown["problems"]]
    assert problems[:3] == [
        {"status": "queued", "code": "unavailable", "kind": "fcm", "count": 1,
         "reason": "503 Service Unavailable"},
        {"status": "failed", "code": "rejected", "kind": "webpush", "count": 1,
         "reason": "400 Bad Request"},
        # one entry for the twelve, with the text of the newest of them
        {"status": "gone", "code": "unsubscribed", "kind": "apns", "count": 12,
         "reason": "Unregistered (the token is invalid since 2026-05-01 10:11:41)"},
    ]  # fmt: skip
    assert [p["reason"] for p in problems[3:]] == [f"old failure {n}" for n in range(7)]
    assert {p["code"] for p in problems[3:]} == {None}
    assert shown["problems"][2]["lastAt"] == (now - timedelta(minutes=30)).isoformat(
        timespec="microseconds"
    ).replace("+00:00", "Z")
    # the ten shown are not all: three more causes, of four deliveries
    assert shown["moreProblems"] == {"entries": 3, "count": 4}
    page = client.get(f"/push/console/messages/{id}", headers=ADMIN).get_data(as_text=True)
    assert "<strong>12</strong>" in page
    assert "and 3 more reasons, for 4 deliveries" in page


def sent_with_tokens(app: Flask, client: Any, audience: Any) -> tuple[str, list[str]]:
    """A message and the click tokens of what was really sent for it."""
    with app.app_context(), push.record() as outbox:
        response = send(client, audience)
    assert response.status_code == 202
    tokens = [p.click_token for p in outbox if p.click_token]
    assert tokens
    return response.get_json()["id"], tokens


def clicked(app: Flask, id: str) -> int:
    with app.app_context():
        return int(db.session.get(push.models.Message, id).clicked)


def test_clicks(app: Flask, client: Any) -> None:
    setup_subscriptions(app)
    id, tokens = sent_with_tokens(app, client, {"users": ["alice"]})
    other, other_tokens = sent_with_tokens(app, client, {"users": ["bob"]})
    url = f"/push/messages/{id}/clicks"
    # anyone: the service worker has no session of the host
    response = client.post(url, json={"clickToken": tokens[0]})
    assert response.status_code == 204 and response.data == b""
    assert clicked(app, id) == 1
    # a delivery's clicks count once: clicked again, or reported twice, is no new click
    assert client.post(url, json={"clickToken": tokens[0]}).status_code == 204
    assert clicked(app, id) == 1
    assert client.post(url, json={"clickToken": tokens[1]}).status_code == 204
    assert clicked(app, id) == 2
    shown = client.get(f"/push/messages/{id}", headers=ADMIN).get_json()
    assert shown["counts"]["clicked"] == 2

    forged = click_serializer("another-secret").dumps({"d": 1, "m": id})
    refused = [
        {"clickToken": forged},
        {"clickToken": tokens[0][:-2]},
        {"clickToken": other_tokens[0]},  # another message's token
        {"clickToken": "é"},
        {"clickToken": ""},
        {"clickToken": None},
        {},
    ]
    for body in refused:
        assert error(client.post(url, json=body), 403)["code"] == "forbidden", body
    # no body at all, still JSON: a missing token
    no_body = client.post(url, data="", content_type="application/json")
    assert error(no_body, 403)["code"] == "forbidden"
    # a token valid for another message does not count on its own path either
    wrong_path = client.post(f"/push/messages/{other}/clicks", json={"clickToken": tokens[0]})
    assert wrong_path.status_code == 403
    assert clicked(app, id) == 2 and clicked(app, other) == 0
    assert error(client.post(url, json={"clickToken": 5}), 400)["field"] == "clickToken"
    assert error(client.post(url, json={"token": "x"}), 400)["code"] == "unknown_field"


def test_a_click_marks_its_inbox_item_read(app: Flask, client: Any) -> None:
    """She opened the notification: its item in the bell is read too, for her alone
    (bob's item of the same message stays new). A message without an item is counted
    as before."""
    setup_subscriptions(app)
    with app.app_context(), push.record() as outbox:
        id = push.send(users=["alice", "bob"], title="Your order is here", inbox=True).id
        plain = push.send(users=["alice"], title="No item").id
    with app.app_context():
        d = push.models.Delivery
        alices = db.session.scalars(sa.select(d.id).where(d.message_id == id, d.user_id == "alice"))
        mine = {str(delivery) for delivery in alices}
        assert push.search("alice").to_json()["newCount"] == 1
    token = next(p.click_token for p in outbox if p.delivery_id in mine)
    assert client.post(f"/push/messages/{id}/clicks", json={"clickToken": token}).status_code == 204
    with app.app_context():
        assert push.search("alice").to_json()["newCount"] == 0
        assert push.search("bob").to_json()["newCount"] == 1
    (other,) = [p for p in outbox if p.message_id == plain and p.click_token][:1]
    url = f"/push/messages/{plain}/clicks"
    assert client.post(url, json={"clickToken": other.click_token}).status_code == 204
    assert clicked(app, plain) == 1


def test_click_on_a_deleted_message_is_404(app: Flask, client: Any) -> None:
    setup_subscriptions(app)
    id, tokens = sent_with_tokens(app, client, {"users": ["alice"]})
    with app.app_context():
        db.session.execute(sa.delete(push.models.Message).where(push.models.Message.id == id))
        db.session.commit()
    response = client.post(f"/push/messages/{id}/clicks", json={"clickToken": tokens[0]})
    assert error(response, 404)["code"] == "not_found"


def test_clicks_need_a_secret_key(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    assert not app.config.get("SECRET_KEY")
    token = click_serializer(SECRET).dumps({"d": 1, "m": "msg_x"})
    response = app.test_client().post("/push/messages/msg_x/clicks", json={"clickToken": token})
    assert error(response, 403)["code"] == "forbidden"
