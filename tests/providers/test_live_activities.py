"""Live activities (``push.activity``) through the real APNs and FCM providers, to
FakeAPNs and FakeFCM, which check Apple's and Google's rules for what they receive.

The pushes are built as dispatch builds them: the notification's ``tag`` and
``collapse_key`` are the activity id, ``OutgoingPush.activity`` carries the state, and
``DeviceTarget.kind`` says which of an installation's tokens the push goes to.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from flask_push.credentials import APNS, FCM
from flask_push.errors import PayloadError
from flask_push.message import (
    Activity,
    DeliveryResult,
    DeviceTarget,
    Notification,
    OutgoingPush,
    TokenKind,
)
from flask_push.providers.apns import APNsProvider
from flask_push.providers.fcm import FCMProvider
from flask_push.pytest_plugin import APNS_TOPIC as TOPIC
from flask_push.testing.apns import FakeAPNs
from flask_push.testing.fcm import FakeFCM, make_registration_token

from conftest import send_batch as send

LIVE_TOPIC = f"{TOPIC}.push-type.liveactivity"
MESSAGE_ID = "msg_01JD3X9K8Q4M2V7T5R1N6B0C9A"
DEVICE_TOKEN = "ab" * 32
#: Live Activity and push-to-start tokens are longer than device tokens
ACTIVITY_TOKEN = "cd" * 80
START_TOKEN = "ef" * 80
T0 = 1_767_000_000


def state(step: int, status: str = "out_for_delivery") -> dict[str, Any]:
    return {"status": status, "step": step, "steps": 5, "eta": "17:40"}


def notification(body: str, **values: Any) -> Notification:
    """The notification dispatch makes for an activity of order 42."""
    return Notification(
        title="Order #42",
        body=body,
        url="/orders/42",
        tag="order-42",
        collapse_key="order-42",
        **values,
    )


STARTED = Activity(
    "order-42",
    "start",
    state(1, "placed"),
    T0,
    attributes_type="OrderAttributes",
    attributes={"orderId": 42, "shop": "FreshCart"},
)
UPDATED = Activity("order-42", "update", state(4), T0 + 60, stale_at=T0 + 1800)
ENDED = Activity("order-42", "end", state(5, "delivered"), T0 + 120, dismiss_at=T0 + 3720)


def outgoing(
    n: int,
    activity: Activity | None,
    kind: TokenKind,
    token: str,
    shown: Notification | None = None,
) -> OutgoingPush:
    return OutgoingPush(
        f"dlv_{n:026d}",
        MESSAGE_ID,
        shown or notification("Out for delivery"),
        DeviceTarget(token, kind),
        activity=activity,
    )


@pytest.fixture
def apns(push_fake_apns: FakeAPNs) -> APNsProvider:
    key_pem, key_id, team_id = push_fake_apns.auth_key()
    settings = APNS.normalize(
        {
            "key": key_pem,
            "keyId": key_id,
            "teamId": team_id,
            "topic": TOPIC,
            "baseUrl": f"https://localhost:{push_fake_apns.port}",
        }
    )
    return APNsProvider.from_settings(settings, ssl_context=push_fake_apns.client_ssl_context())


@pytest.fixture
def fcm(push_fake_fcm: FakeFCM) -> FCMProvider:
    settings = FCM.normalize(
        {"credentials": push_fake_fcm.service_account(), "baseUrl": push_fake_fcm.base_url}
    )
    return FCMProvider.from_settings(settings, concurrency=10, timeout=5.0)


def statuses(results: list[DeliveryResult]) -> list[str]:
    return [result.status for result in results]


# APNs: Live Activity pushes


def test_start_update_and_end_arrive_as_live_activity_pushes(
    push_fake_apns: FakeAPNs, apns: APNsProvider
) -> None:
    pushes = [
        outgoing(0, STARTED, "start", START_TOKEN, notification("Placed", sound="default")),
        outgoing(1, UPDATED, "activity", ACTIVITY_TOKEN),
        outgoing(2, ENDED, "activity", ACTIVITY_TOKEN, notification("Delivered", sound="ding")),
    ]

    assert statuses(send(apns, pushes)) == ["sent"] * 3

    start, update, end = push_fake_apns.notifications
    for received in (start, update, end):
        assert received.push_type == "liveactivity"
        assert received.topic == LIVE_TOPIC
        assert "apns-collapse-id" not in received.headers  # the token is the activity
    assert start.device_token == START_TOKEN
    assert start.headers["apns-priority"] == "10"
    assert start.payload == {
        "aps": {
            "timestamp": T0,
            "event": "start",
            "content-state": state(1, "placed"),
            "alert": {"title": "Order #42", "body": "Placed", "sound": "default"},
            "attributes-type": "OrderAttributes",
            "attributes": {"orderId": 42, "shop": "FreshCart"},
        }
    }
    # An update of normal urgency spends none of Apple's priority-10 budget.
    assert update.headers["apns-priority"] == "5"
    assert update.payload == {
        "aps": {
            "timestamp": T0 + 60,
            "event": "update",
            "content-state": state(4),
            "stale-date": T0 + 1800,
        }
    }
    assert end.headers["apns-priority"] == "10"
    assert end.payload == {
        "aps": {
            "timestamp": T0 + 120,
            "event": "end",
            "content-state": state(5, "delivered"),
            "dismissal-date": T0 + 3720,
            "alert": {"title": "Order #42", "body": "Delivered", "sound": "ding"},
        }
    }
    # What the lock screens show: the push-to-start's activity, and the ended one.
    shown = push_fake_apns.live_activities
    assert shown[START_TOKEN].attributes == {"orderId": 42, "shop": "FreshCart"}
    assert (shown[ACTIVITY_TOKEN].event, shown[ACTIVITY_TOKEN].content_state) == (
        "end",
        state(5, "delivered"),
    )


def test_an_urgent_update_goes_at_priority_10_and_a_start_to_a_running_activity_updates_it(
    push_fake_apns: FakeAPNs, apns: APNsProvider
) -> None:
    urgent = notification("Your driver is outside", urgency="high")
    pushes = [
        outgoing(0, UPDATED, "activity", ACTIVITY_TOKEN, urgent),
        # The app started it itself and registered its token: it runs already.
        outgoing(1, STARTED, "activity", "12" * 80),
    ]

    assert statuses(send(apns, pushes)) == ["sent"] * 2

    urgent_update, started = push_fake_apns.notifications
    assert urgent_update.headers["apns-priority"] == "10"
    assert "alert" not in urgent_update.aps  # alerts on start and end only
    assert started.aps["event"] == "update"
    assert "attributes" not in started.aps and "attributes-type" not in started.aps
    assert started.aps["alert"] == {"title": "Order #42", "body": "Out for delivery"}


def test_what_a_push_to_start_token_cannot_do_fails_without_a_request(
    push_fake_apns: FakeAPNs, apns: APNsProvider
) -> None:
    bare_start = replace(STARTED, attributes_type=None, attributes=None)
    pushes = [
        outgoing(0, UPDATED, "start", START_TOKEN),
        outgoing(1, bare_start, "start", START_TOKEN),
        outgoing(2, None, "activity", ACTIVITY_TOKEN),  # not an activity push
    ]

    results = send(apns, pushes)

    assert statuses(results) == ["failed"] * 3
    errors = [result.error or "" for result in results]
    assert "only starts a Live Activity" in errors[0]
    assert "attributes_type and attributes" in errors[1]
    assert "Live Activity pushes only" in errors[2]
    assert push_fake_apns.notifications == [] and push_fake_apns.rejections == []


def test_a_dead_live_activity_token_is_gone_and_named(
    push_fake_apns: FakeAPNs, apns: APNsProvider
) -> None:
    push_fake_apns.unregister(ACTIVITY_TOKEN, timestamp=1_700_000_000_000)
    push_fake_apns.fail_next(410, "ExpiredToken", token=START_TOKEN)
    pushes = [
        outgoing(0, UPDATED, "activity", ACTIVITY_TOKEN),
        outgoing(1, STARTED, "start", START_TOKEN),
        outgoing(2, UPDATED, "device", DEVICE_TOKEN),  # the device's token still works
    ]

    results = send(apns, pushes)

    assert statuses(results) == ["gone", "gone", "sent"]
    assert results[0].status_code == 410
    assert (results[0].error or "").startswith("Unregistered (the token is invalid since")
    assert (results[0].error or "").endswith("it was the Live Activity's push token")
    assert results[1].error == "ExpiredToken; it was the push-to-start token"


# APNs: an installation without a token for the activity


def test_without_an_activity_token_an_alert_replaces_the_last_one(
    push_fake_apns: FakeAPNs, apns: APNsProvider
) -> None:
    pushes = [
        outgoing(0, UPDATED, "device", DEVICE_TOKEN),
        outgoing(1, ENDED, "device", DEVICE_TOKEN, notification("Delivered")),
    ]

    assert statuses(send(apns, pushes)) == ["sent"] * 2

    update, end = push_fake_apns.notifications
    assert update.push_type == "alert" and update.topic == TOPIC
    assert update.headers["apns-collapse-id"] == "order-42"
    assert update.headers["apns-priority"] == "10"
    assert update.payload == {
        "aps": {
            "alert": {"title": "Order #42", "body": "Out for delivery"},
            "thread-id": "order-42",
        },
        "messageId": MESSAGE_ID,
        "url": "/orders/42",
        "activity": {"id": "order-42", "event": "update", "state": state(4), "timestamp": T0 + 60},
    }
    assert end.headers["apns-collapse-id"] == "order-42"
    assert end.payload["activity"]["event"] == "end"
    assert push_fake_apns.live_activities == {}


# APNs: preview and size


def test_preview_shows_the_live_activity_request(apns: APNsProvider) -> None:
    preview = apns.preview(outgoing(0, UPDATED, "activity", ACTIVITY_TOKEN))

    assert preview["path"] == f"/3/device/{ACTIVITY_TOKEN}"
    headers = preview["headers"]
    assert headers["apns-push-type"] == "liveactivity"
    assert headers["apns-topic"] == LIVE_TOPIC
    assert headers["apns-priority"] == "5"
    assert "apns-collapse-id" not in headers
    assert preview["payload"]["aps"]["content-state"] == state(4)


def test_the_size_check_counts_the_activity(apns: APNsProvider) -> None:
    shown = notification("Out for delivery")
    big = replace(UPDATED, state={"route": "x" * 3900})

    apns.check(shown, UPDATED)
    assert apns.activity_payload_size(shown, UPDATED) > apns.payload_size(shown)
    with pytest.raises(PayloadError, match="apns payload would be"):
        apns.check(shown, big)
    # The push-to-start carries the attributes too: the largest shape counts.
    attributes = {"note": "y" * 3300}
    start = replace(STARTED, state={"route": "x" * 900}, attributes=attributes)
    assert apns.activity_payload_size(shown, start) > apns.activity_payload_size(
        shown, replace(start, event="update", attributes_type=None, attributes=None)
    )
    with pytest.raises(PayloadError):
        apns.check(shown, start)


# FCM


def test_fcm_replaces_the_notification_in_place_with_the_state_in_data(
    push_fake_fcm: FakeFCM, fcm: FCMProvider
) -> None:
    token = make_registration_token()
    shown = notification("Out for delivery", data={"activity": "mine", "orderId": 42})
    pushes = [
        outgoing(0, UPDATED, "device", token, shown),
        outgoing(1, ENDED, "device", token, notification("Delivered")),
    ]

    assert statuses(send(fcm, pushes)) == ["sent"] * 2

    by_event = {json.loads((m.data or {})["activity"])["event"]: m for m in push_fake_fcm.messages}
    update, end = by_event["update"], by_event["end"]
    assert update.android is not None
    assert update.android["collapse_key"] == "order-42"
    assert update.android["notification"]["tag"] == "order-42"
    assert update.data is not None and end.data is not None
    assert update.data["orderId"] == "42"
    # the activity wins over a data key of the same name
    assert json.loads(update.data["activity"]) == {
        "id": "order-42",
        "event": "update",
        "state": state(4),
        "timestamp": T0 + 60,
    }
    assert json.loads(end.data["activity"])["event"] == "end"
    assert end.android is not None and end.android["notification"]["tag"] == "order-42"


def test_fcm_preview_and_size_check_carry_the_activity(fcm: FCMProvider) -> None:
    shown = notification("Out for delivery")
    preview = fcm.preview(outgoing(0, UPDATED, "device", make_registration_token()))

    assert json.loads(preview["body"]["message"]["data"]["activity"])["state"] == state(4)
    assert fcm.activity_payload_size(shown, UPDATED) > fcm.payload_size(shown)
    with pytest.raises(PayloadError):
        fcm.check(shown, replace(UPDATED, state={"route": "x" * 3900}))


def test_a_refused_live_activity_topic_names_it(
    push_fake_apns: FakeAPNs, apns: APNsProvider
) -> None:
    push_fake_apns.fail_next(400, "TopicDisallowed", token=ACTIVITY_TOKEN)

    [result] = send(apns, [outgoing(0, UPDATED, "activity", ACTIVITY_TOKEN)])

    assert result.status == "failed"
    assert result.error == (
        f"400 TopicDisallowed: check PUSH_APNS_TOPIC ({TOPIC}) and that the app supports "
        f"Live Activities: they go to {LIVE_TOPIC}"
    )
