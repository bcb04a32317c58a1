"""Operations: each delivery's timeline, ``push.explain`` and ``/messages/<id>/deliveries``,
cancel, retry what failed, a user's targets, all through the real fakes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_push.testing import FakePushService

from conftest import as_user, db, push

ADMIN = as_user("root", admin=True)
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36"
)


@pytest.fixture
def live(make_app: Callable[..., Flask]) -> Flask:
    return make_app(
        SECRET_KEY="test-secret",
        PUSH_QUEUE="inline",
        PUSH_SUPPRESS_SEND=False,
        PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
    )


def send(client: Any, users: list[str], **notification: Any) -> str:
    answer = client.post(
        "/push/messages",
        json={"audience": {"users": users}, "notification": {"title": "Order #42", **notification}},
        headers=ADMIN,
    )
    assert answer.status_code == 202, answer.get_json()
    return str(answer.get_json()["id"])


def by_target(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["target"]["id"]: entry for entry in entries}


def subscribe(client: Any, service: FakePushService, name: str, user: str = "al") -> tuple[str, Any]:
    subscriber = service.subscribe(name)
    answer = client.post(
        "/push/subscriptions",
        json=subscriber.info,
        headers={**as_user(user), "User-Agent": CHROME_ANDROID},
    )
    assert answer.status_code == 201, answer.get_json()
    return str(answer.get_json()["id"]), subscriber


def test_each_web_push_outcome_has_its_events(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    client = live.test_client()
    (fine, _), (gone, b), (refused, c), (busy, d) = (
        subscribe(client, push_fake_webpush, n) for n in "abcd"
    )
    b.expire()
    push_fake_webpush.fail_next(400, subscriber=c)
    push_fake_webpush.fail_next(503, subscriber=d, retry_after=600)
    id = send(client, ["al"])
    with live.app_context():
        entries = by_target(push.explain(id))
    assert {entry["status"] for entry in entries.values()} == {"sent", "gone", "failed", "queued"}
    for entry in entries.values():
        assert entry["target"] == {
            "kind": "webpush", "id": entry["target"]["id"], "userId": "al",
            "label": "Chrome on Android",
        }  # fmt: skip
        assert entry["attempts"] == 1
        queued, attempt, outcome = entry["events"]
        assert queued["what"] == "queued" and attempt["what"] == "attempt"
        assert entry["detail"] == outcome["detail"]

    sent = entries[fine]
    assert sent["reason"] == "accepted" and sent["sentAt"] is not None
    assert sent["events"][1]["statusCode"] == 201
    location = push_fake_webpush.pushes[0].message_id
    assert location and location in sent["events"][2]["serviceId"]
    assert sent["detail"].startswith("The browser's push service accepted it at ")

    dead = entries[gone]
    assert dead["reason"] == "unsubscribed" and dead["events"][2]["what"] == "gone"
    assert "answered 410 Gone at " in dead["detail"]
    assert dead["detail"].endswith("this subscription is dead and will not be used again.")

    failed = entries[refused]
    assert failed["reason"] == "rejected" and failed["events"][1]["statusCode"] == 400
    assert "refused it" in failed["detail"] and "400 Bad Request" in failed["detail"]

    waiting = entries[busy]
    assert waiting["reason"] == "unavailable" and waiting["events"][2]["what"] == "retry"
    assert waiting["nextAttemptAt"] == waiting["events"][2]["nextAttemptAt"]
    assert "answered 503 Service Unavailable" in waiting["detail"]
    assert "it will be tried again at" in waiting["detail"]
