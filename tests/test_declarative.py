"""Web Push payloads of live activities, and WebKit's Declarative Web Push
(``PUSH_SITE_URL``): the shapes, the URLs resolved against the site, and the size
limit measured on the form that goes out. The bundled worker showing both forms is
tested in real Chromium in test_declarative_browser.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_push.credentials import WEBPUSH
from flask_push.errors import PayloadError
from flask_push.message import Activity, Notification, OutgoingPush, WebPushTarget
from flask_push.providers.webpush import WebPushProvider
from flask_push.testing import FakeAPNs, FakeFCM, FakePushService
from flask_push.testing.fcm import make_registration_token

from conftest import add_subscription, as_user, browser_keys, db, push, subscribe

SITE = "https://shop.example/"
ORDER = Activity(
    id="order-42",
    event="update",
    state={"status": "out_for_delivery", "step": 4, "steps": 5},
    timestamp=1_700_000_000,
)


def provider(key: str, site_url: str | None = SITE) -> WebPushProvider:
    settings = WEBPUSH.normalize({"privateKey": key, "subject": "mailto:ops@shop.example"})
    return WebPushProvider.from_settings(settings, site_url=site_url)


def payload(
    key: str,
    site_url: str | None = SITE,
    activity: Activity | None = None,
    click_token: str | None = "ct_1",
    **fields: Any,
) -> Any:
    """The JSON ``build_payload`` makes of a notification of ``fields``."""
    keys = browser_keys()
    push = OutgoingPush(
        delivery_id="dlv_1",
        message_id="msg_1",
        notification=Notification(**{"title": "Order #42", **fields}),
        target=WebPushTarget("https://fcm.googleapis.com/fcm/send/x", keys["p256dh"], keys["auth"]),
        click_token=click_token,
        activity=activity,
    )
    return json.loads(provider(key, site_url).build_payload(push).body)


# -- the shapes ------------------------------------------------------------------------------


def test_an_activity_rides_in_the_section_4_payload(vapid_private_key: str) -> None:
    given = payload(
        vapid_private_key,
        site_url=None,
        activity=ORDER,
        body="Out for delivery",
        url="/orders/42",
        tag="order-42",
        collapse_key="order-42",
        data={"orderId": 42},
    )
    assert given == {
        "title": "Order #42",
        "body": "Out for delivery",
        "url": "/orders/42",
        "tag": "order-42",
        "data": {"orderId": 42},
        "activity": {
            "id": "order-42",
            "event": "update",
            "state": {"status": "out_for_delivery", "step": 4, "steps": 5},
            "timestamp": 1_700_000_000,
        },
        "messageId": "msg_1",
        "clickToken": "ct_1",
    }
    # without an activity, and without PUSH_SITE_URL, nothing changes
    assert "activity" not in payload(vapid_private_key, site_url=None)


def test_the_declarative_payload(vapid_private_key: str) -> None:
    given = payload(
        vapid_private_key,
        body="Out for delivery",
        url="/orders/42",
        icon="/static/icon.png",
        image="https://cdn.example/van.jpg",
        badge=3,
        tag="order-42",
        data={"orderId": 42},
    )
    assert given == {
        "web_push": 8030,
        "notification": {
            "title": "Order #42",
            "body": "Out for delivery",
            "navigate": "https://shop.example/orders/42",
            "tag": "order-42",
            "icon": "https://shop.example/static/icon.png",
            "image": "https://cdn.example/van.jpg",
            "data": {
                "messageId": "msg_1",
                "clickToken": "ct_1",
                "url": "/orders/42",
                "data": {"orderId": 42},
            },
        },
        "app_badge": 3,
    }


def test_a_bare_declarative_payload_navigates_to_the_site(vapid_private_key: str) -> None:
    """No url: ``navigate`` (which WebKit requires) is the site itself; no body, tag,
    images, badge or click token: none of them is sent."""
    assert payload(vapid_private_key, click_token=None) == {
        "web_push": 8030,
        "notification": {
            "title": "Order #42",
            "navigate": "https://shop.example/",
            "data": {"messageId": "msg_1"},
        },
    }


@pytest.mark.parametrize(
    ("site", "url", "navigate"),
    [
        ("https://shop.example/", "/orders/42", "https://shop.example/orders/42"),
        (
            "https://shop.example/",
            "/orders/42?tab=map#eta",
            "https://shop.example/orders/42?tab=map#eta",
        ),
        ("https://shop.example:8443/", "/orders/42", "https://shop.example:8443/orders/42"),
        # an app mounted below the site's root: a path is the app's, below its mount
        # point, as the service worker reads it (once the site's /orders/42, outside it)
        ("https://shop.example/store/", "/orders/42", "https://shop.example/store/orders/42"),
        ("https://shop.example/store", "/orders/42", "https://shop.example/store/orders/42"),
        ("https://shop.example/store/", "orders/42", "https://shop.example/store/orders/42"),
        # made with the mount already (url_for in a request): not mounted twice
        (
            "https://shop.example/store/",
            "/store/orders/42",
            "https://shop.example/store/orders/42",
        ),
        ("https://shop.example/store/", None, "https://shop.example/store/"),
        ("https://shop.example/store", None, "https://shop.example/store"),
        # an absolute link stays as it is
        ("https://shop.example/", "https://track.example/42", "https://track.example/42"),
        ("https://shop.example/store/", "https://track.example/42", "https://track.example/42"),
        ("http://localhost:5000/", "/orders/42", "http://localhost:5000/orders/42"),
    ],
)
def test_links_resolve_against_the_site(
    vapid_private_key: str, site: str, url: str | None, navigate: str
) -> None:
    shown = payload(vapid_private_key, site_url=site, url=url, icon="/i.png", badge="/b.png")
    assert shown["notification"]["navigate"] == navigate
    root = site.rstrip("/")
    assert shown["notification"]["icon"] == f"{root}/i.png"
    # a str badge is the monochrome image; it is no app badge count
    assert shown["notification"]["badge"] == f"{root}/b.png" and "app_badge" not in shown


def test_the_collapse_key_is_the_tag_when_no_tag_is_given(vapid_private_key: str) -> None:
    assert payload(vapid_private_key, collapse_key="order-42")["notification"]["tag"] == "order-42"
    assert payload(vapid_private_key, tag="t", collapse_key="c")["notification"]["tag"] == "t"


@pytest.mark.parametrize(
    ("event", "quiet"),
    [("start", {"renotify": True}), ("update", {"silent": True}), ("end", {"renotify": True})],
)
def test_an_activity_alerts_on_start_and_end_and_updates_quietly(
    vapid_private_key: str, event: str, quiet: dict[str, bool]
) -> None:
    """As an iOS Live Activity: the start and the end alert (``renotify``: even when
    they replace the shown state), the updates in between replace it silently."""
    activity = Activity("order-42", event, {"step": 1}, 1_700_000_000)  # type: ignore[arg-type]
    shown = payload(vapid_private_key, activity=activity, tag="order-42", url="/orders/42")
    notification = shown["notification"]
    assert {k: notification[k] for k in ("renotify", "silent") if k in notification} == quiet
    assert notification["data"]["activity"] == {
        "id": "order-42",
        "event": event,
        "state": {"step": 1},
        "timestamp": 1_700_000_000,
    }


def test_preview_shows_the_declarative_payload(app: Flask, make_app: Callable[..., Flask]) -> None:
    site_app = make_app(PUSH_SITE_URL="https://shop.example")
    checker = site_app.extensions["push"].get_checkers()["webpush"]
    assert checker.site_url == "https://shop.example/"
    keys = browser_keys()
    push_ = OutgoingPush(
        "dlv_1",
        "msg_1",
        Notification(title="Hi", url="/orders/42"),
        WebPushTarget("https://fcm.googleapis.com/fcm/send/x", keys["p256dh"], keys["auth"]),
    )
    shown = checker.preview(push_)["payload"]
    assert shown["notification"]["navigate"] == "https://shop.example/orders/42"
    # an app without PUSH_SITE_URL keeps the payload of section 4
    assert app.extensions["push"].get_checkers()["webpush"].site_url is None


# -- size ------------------------------------------------------------------------------------


def largest_classic_body(key: str) -> Notification:
    """A notification whose section 4 payload is exactly 4096 bytes on the wire."""
    classic = provider(key, site_url=None)
    room = classic.max_payload - classic.payload_size(Notification(title="x", body=""))
    notification = Notification(title="x", body="b" * room)
    assert classic.payload_size(notification) == 4096
    return notification


def test_the_declarative_form_is_what_is_measured(vapid_private_key: str) -> None:
    notification = largest_classic_body(vapid_private_key)
    assert provider(vapid_private_key).payload_size(notification) > 4096
    with pytest.raises(PayloadError, match="limit is 4096"):
        provider(vapid_private_key).check(notification)


def test_an_activity_state_counts_towards_the_limit(vapid_private_key: str) -> None:
    webpush = provider(vapid_private_key)
    notification = Notification(title="Order #42")
    small = webpush.payload_size(notification)
    with_state = webpush.activity_payload_size(notification, ORDER)
    assert with_state - small == len(
        b',"activity":{"id":"order-42","event":"update","state":'
        b'{"status":"out_for_delivery","step":4,"steps":5},"timestamp":1700000000}'
    )
    big = Activity("order-42", "update", {"note": "n" * 4000}, 1_700_000_000)
    assert webpush.activity_payload_size(notification, big) > 4096
    keys = browser_keys()
    too_big = OutgoingPush(
        "dlv_1",
        "msg_1",
        notification,
        WebPushTarget("https://fcm.googleapis.com/fcm/send/x", keys["p256dh"], keys["auth"]),
        activity=big,
    )
    with pytest.raises(PayloadError, match="limit is 4096"):
        webpush.build_payload(too_big)


def test_a_send_too_large_once_declarative_writes_nothing(
    make_app: Callable[..., Flask], vapid_private_key: str
) -> None:
    notification = largest_classic_body(vapid_private_key)
    app = make_app(PUSH_QUEUE="inline", PUSH_SITE_URL="https://shop.example")
    with app.app_context():
        add_subscription("alice")
        with pytest.raises(PayloadError, match="limit is 4096"):
            push.send(users=["alice"], title="x", body=notification.body, inbox=True)
        for model in (push.models.Message, push.models.Delivery, push.models.InboxItem):
            assert db.session.scalar(sa.select(sa.func.count()).select_from(model)) == 0
        client = app.test_client()
        body = {
            "audience": {"users": ["alice"]},
            "notification": {"title": "x", "body": notification.body},
        }
        response = client.post("/push/messages", json=body, headers=as_user("root", admin=True))
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["error"]["code"] == "payload_too_large"
        assert db.session.scalar(sa.select(sa.func.count()).select_from(push.models.Message)) == 0

    # the same notification fits the section 4 payload, and goes (one database: bob
    # is new to it)
    plain = make_app(PUSH_QUEUE="inline")
    with plain.app_context():
        add_subscription("bob")
        assert push.send(users=["bob"], title="x", body=notification.body).recipient_count == 1


# -- on the wire -----------------------------------------------------------------------------


def test_a_real_send_puts_the_declarative_payload_on_the_wire(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    app = sending_app(PUSH_SITE_URL="https://shop.example")
    subscriber = push_fake_webpush.subscribe("alice's browser")
    with app.app_context():
        subscribe(subscriber, "alice")
        message = push.send(
            users=["alice"],
            title="Order #42",
            body="Out for delivery",
            url="/orders/42",
            collapse_key="order-42",
            badge=2,
        )
    [received] = subscriber.wait(1)
    given = received.json()
    assert received.topic == "order-42"
    assert given["web_push"] == 8030 and given["app_badge"] == 2
    shown = given["notification"]
    assert (shown["title"], shown["body"], shown["tag"]) == (
        "Order #42",
        "Out for delivery",
        "order-42",
    )
    assert shown["navigate"] == "https://shop.example/orders/42"
    assert shown["data"]["messageId"] == message.id and shown["data"]["clickToken"]


@pytest.mark.parametrize("site", ["https://shop.example", "https://shop.example/shop"])
def test_a_phones_image_resolves_against_the_site(
    sending_app: Callable[..., Flask], push_fake_fcm: FakeFCM, push_fake_apns: FakeAPNs, site: str
) -> None:
    # An image given as a path reached FCM and APNs as that path, which a phone cannot
    # download: the browsers showed the picture, the phones none. The url stays a path
    # there, for the app to route.
    # An app mounted at /shop: its image is below the mount, as the browsers show it.
    app = sending_app(PUSH_SITE_URL=site, **push_fake_apns.app_config())
    with app.app_context():
        phones = (("android", make_registration_token()), ("ios", "ab" * 32))
        db.session.add_all(
            push.models.Installation(app_id="shop", device_token=t, device_type=k, user_id="alice")
            for k, t in phones
        )
        db.session.commit()
        push.send(users=["alice"], title="Apples", image="/static/apples.jpg", url="/offers/7")
    [android] = push_fake_fcm.wait(1)
    assert android.notification["image"] == f"{site}/static/apples.jpg"
    assert android.data["url"] == "/offers/7"
    [iphone] = push_fake_apns.wait(1)
    assert iphone.payload["image"] == f"{site}/static/apples.jpg"
    assert iphone.payload["url"] == "/offers/7"


def test_an_image_path_without_a_site_url_is_said_once(
    sending_app: Callable[..., Flask],
    push_fake_apns: FakeAPNs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The phones get no picture from a path: once a silent "sent" with no image on
    # Android and iOS. Each provider that downloads images says so, once a process.
    app = sending_app(**push_fake_apns.app_config())
    with app.app_context(), caplog.at_level(logging.WARNING, logger="flask_push"):
        push.send(users=["alice"], title="Apples", image="/static/apples.jpg")
        push.send(users=["alice"], title="Pears", image="/static/pears.jpg")
        push.send(users=["alice"], title="Plums", image="https://cdn.example/plums.jpg")
    said = sorted(r.getMessage() for r in caplog.records if "PUSH_SITE_URL" in r.getMessage())
    assert len(said) == 2, said
    assert all("'/static/apples.jpg' is a path" in line for line in said)
    assert [line.split("so ")[1].split(" ")[0] for line in said] == ["apns", "fcm"]
    # with the site's address, the path resolves (above), and nothing is said
    caplog.clear()
    app = sending_app(PUSH_SITE_URL=SITE, **push_fake_apns.app_config())
    with app.app_context(), caplog.at_level(logging.WARNING, logger="flask_push"):
        push.send(users=["alice"], title="Apples", image="/static/apples.jpg")
    assert not [r for r in caplog.records if "PUSH_SITE_URL" in r.getMessage()]
