"""push.send end to end against web-push-testing, an outside push service (npm).

The whole product path: a browser's subscription registered over the API, a send
through the outbox and the inline dispatcher, and a push service written by
others that checks the VAPID signature and decrypts what arrives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask

from conftest import as_user, push


def test_send_reaches_an_outside_push_service(
    make_app: Callable[..., Flask], web_push_testing: Any
) -> None:
    app = make_app(
        SECRET_KEY="test-secret",
        PUSH_QUEUE="inline",
        PUSH_SUPPRESS_SEND=False,
        PUSH_ENDPOINT_HOSTS=["localhost"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
    )
    client = app.test_client()
    key = client.get("/push/vapid-public-key").json["publicKey"]
    browser = web_push_testing.subscribe(key)
    subscription = {"endpoint": browser["endpoint"], "keys": browser["keys"]}
    assert (
        client.post("/push/subscriptions", json=subscription, headers=as_user("alice")).status_code
        == 201
    )

    with app.app_context():
        message = push.send(
            users=["alice"],
            title="Order #42",
            body="Out for delivery",
            url="/orders/42",
            data={"orderId": 42},
            urgency="high",
        )
    counts = client.get(f"/push/messages/{message.id}", headers=as_user("root", admin=True))
    assert counts.json["counts"]["sent"] == 1 and counts.json["status"] == "done"
    [payload] = [json.loads(m) for m in web_push_testing.notifications(browser["clientHash"])]
    assert payload["title"] == "Order #42" and payload["url"] == "/orders/42"
    assert payload["data"] == {"orderId": 42} and payload["messageId"] == message.id
    clicked = client.post(
        f"/push/messages/{message.id}/clicks", json={"clickToken": payload["clickToken"]}
    )
    assert clicked.status_code == 204  # the token in the payload is the one the server signed
    counts = client.get(f"/push/messages/{message.id}", headers=as_user("root", admin=True))
    assert counts.json["counts"]["clicked"] == 1
