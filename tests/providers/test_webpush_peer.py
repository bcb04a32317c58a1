"""The Web Push provider against web-push-testing, an outside push service (npm).

Our own fake and our sender could share a misreading of RFC 8291/8292; an
implementation written by others, which checks the VAPID signature and decrypts
aes128gcm itself, rules that out.
"""

from __future__ import annotations

import json

from flask_push import credentials
from flask_push.message import Notification, OutgoingPush, WebPushTarget
from flask_push.providers.webpush import WebPushProvider

from conftest import send_batch as send


def test_peer_decrypts_what_we_send_and_reports_expiry(web_push_testing, vapid_private_key):
    settings = credentials.WEBPUSH.normalize(
        {"privateKey": vapid_private_key, "subject": "mailto:ops@shop.example"}
    )
    subscriptions = [web_push_testing.subscribe(settings["publicKey"]) for _ in range(3)]
    notification = Notification(
        title="Order #42",
        body="Out for delivery",
        url="/orders/42",
        data={"orderId": 42},
        ttl=3600,
        urgency="high",
        collapse_key="order-42",
    )
    pushes = [
        OutgoingPush(
            f"d{i}",
            "msg_1",
            notification,
            WebPushTarget(s["endpoint"], s["keys"]["p256dh"], s["keys"]["auth"]),
        )
        for i, s in enumerate(subscriptions)
    ]

    def provider() -> WebPushProvider:
        return WebPushProvider.from_settings(
            settings, allow_http=True, allow_private_hosts=["localhost"], timeout=10
        )

    results = send(provider(), pushes)
    assert [r.status for r in results] == ["sent"] * 3, results
    for subscription in subscriptions:
        [message] = web_push_testing.notifications(subscription["clientHash"])
        payload = json.loads(message)
        assert payload["title"] == "Order #42" and payload["url"] == "/orders/42"
        assert payload["data"] == {"orderId": 42} and payload["messageId"] == "msg_1"

    web_push_testing.expire(subscriptions[0]["clientHash"])
    [gone] = send(provider(), pushes[:1])
    assert gone.status == "gone" and gone.status_code == 410
