"""Operations: each delivery's timeline, ``push.explain`` and ``/messages/<id>/deliveries``,
cancel, retry what failed, a user's targets, all through the real fakes."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from markupsafe import escape
from prometheus_client.parser import text_string_to_metric_families

from flask_push import outcomes, signals
from flask_push.dispatch import Dispatcher
from flask_push.errors import ValidationError
from flask_push.models import utcnow
from flask_push.providers.webpush import WebPushProvider
from flask_push.testing import FakePushService

from conftest import (
    add_subscription,
    as_user,
    db,
    instant,
    later,
    make_due,
    push,
    sending_held,
    wait_until,
)

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


def subscribe(
    client: Any, service: FakePushService, name: str, user: str = "al"
) -> tuple[str, Any]:
    subscriber = service.subscribe(name)
    answer = client.post(
        "/push/subscriptions",
        json=subscriber.info,
        headers={**as_user(user), "User-Agent": CHROME_ANDROID},
    )
    assert answer.status_code == 201, answer.get_json()
    return str(answer.get_json()["id"]), subscriber


def test_a_suppressed_send_says_it_was_only_recorded(
    make_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """Under TESTING nothing goes out: the timeline says so, instead of a push
    service that accepted it."""
    app = make_app(
        PUSH_QUEUE="inline",
        TESTING=True,
        PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
    )
    client = app.test_client()
    subscribe(client, push_fake_webpush, "a")
    with app.app_context():
        (entry,) = push.explain(send(client, ["al"]))
    assert (entry["status"], entry["reason"]) == ("sent", "recorded")
    assert entry["detail"].startswith("Recorded at ") and "not sent" in entry["detail"]
    assert entry["events"][1]["detail"] == (
        "Attempt 1: flask-push's recorder (PUSH_SUPPRESS_SEND) kept the push and sent nothing."
    )
    assert "push service" not in entry["detail"]
    assert push_fake_webpush.requests == []


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
    assert waiting["detail"].endswith(", no sooner than its Retry-After of 600 s asked.")


def test_an_address_flask_push_refuses_is_not_blamed_on_the_push_service(
    make_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A name that PUSH_ENDPOINT_HOSTS lets in, and that DNS later answers with a
    # loopback address (rebinding): flask-push refuses to connect when it sends.
    real = socket.getaddrinfo

    def rebound(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "push.example.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    app = make_app(
        PUSH_QUEUE="inline",
        PUSH_SUPPRESS_SEND=False,
        PUSH_ENDPOINT_HOSTS=["*.example.test"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
    )
    client = app.test_client()
    subscriber = push_fake_webpush.subscribe()
    endpoint = subscriber.endpoint.replace("127.0.0.1", "push.example.test")
    answer = client.post(
        "/push/subscriptions", json={**subscriber.info, "endpoint": endpoint}, headers=as_user("al")
    )
    assert answer.status_code == 201, answer.get_json()
    id = send(client, ["al"])
    with app.app_context():
        (entry,) = push.explain(id)
    assert (entry["status"], entry["reason"]) == ("failed", "address_blocked")
    attempt = entry["events"][1]["detail"]
    assert attempt.startswith("Attempt 1: flask-push's address check refused to connect")
    assert entry["detail"].startswith("flask-push did not connect at ")
    # what to do, in the app's own terms; the push service is not blamed
    assert "PUSH_ENDPOINT_HOSTS" in entry["detail"] and "push service" not in entry["detail"]
    assert push_fake_webpush.requests == []


def test_a_payload_the_push_service_finds_too_large_says_what_to_shorten(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    client = live.test_client()
    subscribe(client, push_fake_webpush, "phone")
    push_fake_webpush.fail_next(413)
    id = send(client, ["al"], body="Your order has shipped")
    with live.app_context():
        (entry,) = push.explain(id)
    assert (entry["status"], entry["reason"]) == ("failed", "too_large")
    # one pair of parentheses: the status, not the service's words inside ours
    assert entry["detail"].count("(") == 1, entry["detail"]
    assert "refused it as too large at " in entry["detail"]
    assert "(413 Request Entity Too Large): it takes less than the 4,096 bytes" in entry["detail"]
    assert "Shorten the notification's body or data" in entry["detail"]
    assert f"{WebPushProvider.max_payload:,} bytes" in entry["detail"]


@pytest.mark.parametrize(
    ("kind", "limit", "status", "said"),
    [
        ("apns", "4,096 bytes of payload", 413, "413 PayloadTooLarge"),
        ("fcm", "4,000 bytes of notification and data", 400, "Android message is too big"),
    ],
)
def test_a_payload_apns_or_fcm_finds_too_large_says_what_to_shorten_alike(
    make_app: Callable[..., Flask],
    push_fake_fcm: Any,
    push_fake_apns: Any,
    kind: str,
    limit: str,
    status: int,
    said: str,
) -> None:
    """APNs' 413 PayloadTooLarge and FCM's 400 INVALID_ARGUMENT "Android message is
    too big" read as Web Push's 413 does: reason too_large, the provider's own limit
    and what to shorten, on every surface; the service's words stay in the error."""
    from flask_push.testing.fcm import make_registration_token

    app = make_app(
        PUSH_QUEUE="inline",
        SECRET_KEY="test-secret",  # the console's
        **{**push_fake_fcm.app_config(), **push_fake_apns.app_config()},
    )
    device, token = ("ios", "ab" * 32) if kind == "apns" else ("android", make_registration_token())
    if kind == "apns":
        push_fake_apns.fail_next(413, "PayloadTooLarge")
    else:
        push_fake_fcm.fail_next(400, "INVALID_ARGUMENT", message="Android message is too big")
    with app.app_context():
        db.session.add(
            push.models.Installation(
                app_id="shop", device_token=token, device_type=device, user_id="al"
            )
        )
        db.session.commit()
        message = push.send(users=["al"], title="Order #42")
        [entry] = push.explain(message.id)
        [phone] = push.user_targets("al")
        deliveries = push.models.Delivery
        error = db.session.scalars(
            sa.select(deliveries.error).where(deliveries.message_id == message.id)
        ).one()
    assert said in (error or ""), error
    assert (entry["status"], entry["reason"]) == ("failed", "too_large")
    detail = entry["detail"]
    assert " refused it as too large at " in detail
    # the status once, not the service's words inside ours (they are in the error)
    assert f" ({status} " in detail and said not in detail, detail
    assert f"it takes less than the {limit} flask-push allows" in detail
    assert "Shorten the notification's body or data, or move data to your server" in detail
    assert phone["status"] == "active"  # too large is the message's fault, not the device's
    client = app.test_client()
    [problem] = client.get(f"/push/messages/{message.id}", headers=ADMIN).get_json()["problems"]
    assert problem["detail"] == detail
    url = f"/push/messages/{message.id}/deliveries"
    [delivery] = client.get(url, headers=ADMIN).get_json()["items"]
    assert (delivery["reason"], delivery["detail"]) == ("too_large", detail)
    shown = app.test_cli_runner().invoke(args=["push", "explain", message.id])
    assert shown.exit_code == 0 and f"  {detail}\n" in shown.output
    page = client.get(f"/push/console/messages/{message.id}", headers=ADMIN)
    assert page.status_code == 200
    assert str(escape(detail)) in page.get_data(as_text=True)  # as Jinja escapes it


def test_a_too_large_live_activity_push_says_its_state_may_be_shortened() -> None:
    """A live activity's state rides in the payload: the sentence names it, and the
    provider's limit, the same for every provider."""
    said = outcomes.detail(
        "too_large",
        service="Apple's push service (APNs)",
        answer="413 Request Entity Too Large",
        **outcomes.too_large_values(4096, "payload", activity=True),
    )
    assert "it takes less than the 4,096 bytes of payload flask-push allows" in said
    assert "Shorten the notification's body or data or the activity's state, or move" in said


def stored(subscriber: Any) -> dict[str, str]:
    """A fake push service's subscriber as a subscription row stores it."""
    return {"endpoint": subscriber.endpoint, "p256dh": subscriber.p256dh, "auth": subscriber.auth}


def test_a_push_flask_push_cannot_make_is_not_blamed_on_the_push_service(
    make_app: Callable[..., Flask], push_fake_webpush: FakePushService
) -> None:
    """A subscription stored under other settings (an http endpoint, taken while
    PUSH_ALLOW_HTTP_ENDPOINTS was on): the push is never made, and the timeline says
    flask-push refused it, not that the push service did."""
    app = make_app(PUSH_QUEUE="inline", PUSH_SUPPRESS_SEND=False, PUSH_ENDPOINT_HOSTS=["127.0.0.1"])
    subscriber = push_fake_webpush.subscribe()
    with app.app_context():
        add_subscription("al", **stored(subscriber))
    id = send(app.test_client(), ["al"])
    with app.app_context():
        (entry,) = push.explain(id)
    assert (entry["status"], entry["reason"]) == ("failed", "unsendable")
    assert entry["events"][1]["detail"].startswith("Attempt 1: flask-push could not make the push")
    assert entry["detail"].startswith("flask-push could not send it at ")
    assert "PUSH_ALLOW_HTTP_ENDPOINTS" in entry["detail"]
    assert "push service" not in entry["detail"]
    assert push_fake_webpush.requests == []


def test_a_push_service_that_cannot_be_reached_is_said_so_in_plain_words(
    make_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No answer is not an answer: the timeline says the service could not be
    reached and why (a closed port, a name that does not resolve), never that it
    "answered ClientConnectorDNSError"."""
    live = make_app(
        PUSH_QUEUE="inline",
        PUSH_SUPPRESS_SEND=False,
        PUSH_ENDPOINT_HOSTS=["127.0.0.1", "*.example.test"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
    )
    client = live.test_client()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    endpoints = {
        "refused": f"http://127.0.0.1:{closed}/push/refused",
        "nameless": "https://push.example.test/push/nameless",
    }
    ids = {}
    for name, endpoint in endpoints.items():
        info = {**push_fake_webpush.subscribe(name).info, "endpoint": endpoint}
        answer = client.post("/push/subscriptions", json=info, headers=as_user("al"))
        assert answer.status_code == 201, answer.get_json()
        ids[name] = answer.get_json()["id"]
    real = socket.getaddrinfo

    def nameless(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "push.example.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", nameless)
    id = send(client, ["al"])
    with live.app_context():
        entries = by_target(push.explain(id))
    said = {
        "refused": f"the connection to 127.0.0.1:{closed} failed (Connection refused)",
        "nameless": "the name push.example.test did not resolve (Name or service not known)",
    }
    for name, why in said.items():
        entry = entries[ids[name]]
        assert (entry["status"], entry["reason"]) == ("queued", "unreachable")
        queued, attempt, retry = entry["events"]
        assert attempt["detail"] == (
            f"Attempt 1: the browser's push service could not be reached: {why}."
        )
        assert attempt.get("statusCode") is None
        assert entry["detail"].startswith(
            "flask-push could not reach the browser's push service at "
        )
        assert f": {why}. It will be tried again at " in entry["detail"]
        assert "answered" not in entry["detail"] + attempt["detail"]

    # and when flask-push gives up, it says the last try found no one either
    with live.app_context():
        make_due(id)
        dispatcher = Dispatcher(live, push.models, db.engine, push.settings, max_attempts=2)
        try:
            dispatcher.run_once(message_id=id)
        finally:
            dispatcher.close()
        entry = by_target(push.explain(id))[ids["refused"]]
    assert (entry["status"], entry["reason"]) == ("failed", "gave_up")
    assert entry["detail"].startswith("flask-push could not reach the browser's push service at ")
    assert entry["detail"].endswith(
        f", attempt 2: the connection to 127.0.0.1:{closed} failed (Connection refused); "
        "flask-push gave up after 2 attempts: once the browser's push service takes "
        "pushes again, retry what failed."
    )


def test_a_push_service_that_takes_a_push_and_does_not_answer_may_have_it(
    make_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request went out and no answer came in time: that is not "could not
    reach", and the push may show twice after the retry. Its wait counts in the
    round-trip histogram too, so a push service that hangs does not look fast."""
    made = WebPushProvider.from_settings.__func__  # type: ignore[attr-defined]

    def impatient(cls: type[WebPushProvider], settings: Any, **options: Any) -> Any:
        return made(cls, settings, **{**options, "timeout": 0.5})

    monkeypatch.setattr(WebPushProvider, "from_settings", classmethod(impatient))
    live = make_app(
        PUSH_QUEUE="inline",
        PUSH_SUPPRESS_SEND=False,
        PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
        PUSH_ALLOW_HTTP_ENDPOINTS=True,
        PUSH_METRICS=True,
        PUSH_METRICS_TOKEN="scrape",
    )
    client = live.test_client()
    subscribe(client, push_fake_webpush, "a")
    push_fake_webpush.hold()
    try:
        id = send(client, ["al"])
    finally:
        push_fake_webpush.release()
    with live.app_context():
        [entry] = push.explain(id)
    scraped = client.get("/push/metrics", headers={"Authorization": "Bearer scrape"})
    waited = [
        sample.value
        for family in text_string_to_metric_families(scraped.get_data(as_text=True))
        for sample in family.samples
        if sample.name == "flask_push_delivery_seconds_sum"
    ]
    assert (entry["status"], entry["reason"]) == ("queued", "no_answer")
    queued, attempt, retry = entry["events"]
    assert attempt["detail"] == (
        "Attempt 1: the browser's push service gave no answer flask-push could read: no "
        "answer came within 0.5 s."
    )
    opening, rest = entry["detail"].split(" UTC", 1)
    assert opening.startswith(
        "flask-push got no answer it could read from the browser's push service at "
    )
    assert rest.startswith(
        ": no answer came within 0.5 s. The push may have arrived all the same (a retry "
        "then shows it twice); it will be tried again at "
    )
    assert waited and sum(waited) >= 0.5


def test_an_answer_that_is_not_http_is_said_on_one_line(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """A service that answers with something else: its parser's words, on one line,
    and not "answered" as though it had."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def garble() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"SMTP ready\r\nnot http at all\r\n\r\n")

        thread = threading.Thread(target=garble, daemon=True)
        thread.start()
        client = live.test_client()
        info = {**push_fake_webpush.subscribe().info, "endpoint": f"http://127.0.0.1:{port}/p"}
        added = client.post("/push/subscriptions", json=info, headers=as_user("al"))
        assert added.status_code == 201
        id = send(client, ["al"])
        thread.join(5)
    with live.app_context():
        [entry] = push.explain(id)
    assert (entry["status"], entry["reason"]) == ("queued", "no_answer")
    attempt = entry["events"][1]["detail"]
    assert attempt.startswith(
        "Attempt 1: the browser's push service gave no answer flask-push could read: its "
        "answer was not HTTP ("
    )
    assert "\n" not in attempt and "answered" not in attempt


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(600, "600 s"), (1.5, "1.5 s"), (1_500_000, "1,500,000 s (17.4 days)")],
)
def test_a_retry_after_reads_as_a_person_says_it(seconds: float, said: str) -> None:
    # a long one was "1.5e+06 s"
    sentence = outcomes.detail("unavailable", retry_after=seconds)
    assert sentence.endswith(f", no sooner than its Retry-After of {said} asked.")


def test_a_retry_after_of_any_size_is_a_retry_within_a_pushs_life(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    # once an OverflowError in the date of the next try: the whole batch's outcomes
    # were lost, and the worker sent the batch again every lease, forever
    client = live.test_client()
    subscribers = (subscribe(client, push_fake_webpush, n) for n in "abcd")
    (fine, _), (busy, b), (later, c), (slowed, d) = subscribers
    push_fake_webpush.fail_next(429, subscriber=b, retry_after="9" * 20)
    push_fake_webpush.fail_next(503, subscriber=c, retry_after=120)
    push_fake_webpush.fail_next(429, subscriber=d, retry_after=120)
    retried: list[bool] = []

    def failed(sender: Any, push: Any, result: Any, will_retry: bool) -> None:
        retried.append(will_retry)

    with signals.delivery_failed.connected_to(failed, sender=live):
        id = send(client, ["al"])
    assert sorted(retried) == [False, True, True]  # the expired one is promised no retry
    with live.app_context():
        entries = by_target(push.explain(id))
    assert entries[fine]["status"] == "sent"
    # within its life (a day): a retry at the time asked for
    waiting = entries[later]
    assert (waiting["status"], waiting["reason"]) == ("queued", "unavailable")
    next_try = instant(waiting["nextAttemptAt"])
    assert next_try >= datetime.now(timezone.utc) + timedelta(seconds=110)
    # a 429: the service is up and slows this sender down, which an operator fixes
    # otherwise than an outage
    throttled = entries[slowed]
    assert (throttled["status"], throttled["reason"]) == ("queued", "rate_limited")
    assert throttled["detail"].startswith(
        "The browser's push service answered 429 Too Many Requests at "
    )
    assert (
        ": it takes pushes from this sender more slowly for now; it will be tried "
        in (throttled["detail"])
    )
    # past it: expired at once, saying why, not a retry promised for a time it never
    # gets (the time to live would end first)
    ended = entries[busy]
    assert (ended["status"], ended["reason"]) == ("expired", "retry_past_ttl")
    assert ended["nextAttemptAt"] is None
    assert ended["detail"].startswith(
        "The browser's push service answered 429 Too Many Requests at "
    )
    assert ", before a next try could come, so it is not tried again." in ended["detail"]


def test_a_push_with_no_time_to_live_is_still_retried_within_its_grace(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """TTL 0 ("now or never") keeps a short grace in the outbox: a 503 is retried in
    it, not expired at once."""
    client = live.test_client()
    _, busy = subscribe(client, push_fake_webpush, "a")
    push_fake_webpush.fail_next(503, subscriber=busy)
    id = send(client, ["al"], ttl=0)
    with live.app_context():
        [entry] = push.explain(id)
    assert (entry["status"], entry["reason"]) == ("queued", "unavailable")


def rows_of(message_id: str) -> list[Any]:
    model = push.models.Delivery
    query = sa.select(model).where(model.message_id == message_id).order_by(model.id)
    return list(db.session.scalars(query.execution_options(populate_existing=True)))


def test_a_retry_then_sent_and_a_click(live: Flask, push_fake_webpush: FakePushService) -> None:
    client = live.test_client()
    sub_id, subscriber = subscribe(client, push_fake_webpush, "a")
    push_fake_webpush.fail_next(500, subscriber=subscriber)
    id = send(client, ["al"])
    with live.app_context():
        make_due(id)
        push.dispatch_due(message_id=id)
        [entry] = push.explain(id)
    assert entry["status"] == "sent" and entry["attempts"] == 2
    kinds = [event["what"] for event in entry["events"]]
    assert kinds == ["queued", "attempt", "retry", "attempt", "sent"]
    assert [e["statusCode"] for e in entry["events"] if e["what"] == "attempt"] == [500, 201]
    assert "answered 500 Internal Server Error" in entry["events"][2]["detail"]

    token = subscriber.received[0].json()["clickToken"]
    answer = client.post(f"/push/messages/{id}/clicks", json={"clickToken": token})
    assert answer.status_code == 204
    client.post(f"/push/messages/{id}/clicks", json={"clickToken": token})  # counted once
    with live.app_context():
        [entry] = push.explain(id)
    assert entry["clickedAt"] is not None
    assert [event["what"] for event in entry["events"]][-1:] == ["clicked"]
    assert [event["what"] for event in entry["events"]].count("clicked") == 1
    assert entry["status"] == "sent"  # a click is told, not a status
    assert entry["detail"].startswith("The browser's push service accepted it")


def test_ttl_ran_out(live: Flask, push_fake_webpush: FakePushService) -> None:
    client = live.test_client()
    subscribe(client, push_fake_webpush, "a")
    push_fake_webpush.fail_next(503)
    id = send(client, ["al"], ttl=60)
    with live.app_context():
        make_due(id, expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
        push.dispatch_due(message_id=id)
        [entry] = push.explain(id)
    assert entry["status"] == "expired" and entry["reason"] == "ttl_expired"
    assert [e["what"] for e in entry["events"]] == ["queued", "attempt", "retry", "expired"]
    assert entry["detail"].startswith("Its time to live of 60 s ran out at ")
    assert entry["detail"].endswith(
        "before it could be sent: no worker sent it in time (none was running, the outbox "
        "was behind, or earlier tries used it up)."
    )


def test_fcm_and_apns_give_their_message_ids(
    make_app: Callable[..., Flask], push_fake_fcm: Any, push_fake_apns: Any
) -> None:
    app = make_app(
        PUSH_QUEUE="inline", **{**push_fake_fcm.app_config(), **push_fake_apns.app_config()}
    )
    from flask_push.testing.fcm import make_registration_token

    with app.app_context():
        for device, token, version in (
            ("android", make_registration_token(), "1.3"),
            ("ios", "ab" * 32, "2.0"),
        ):
            db.session.add(
                push.models.Installation(
                    app_id="shop",
                    device_token=token,
                    device_type=device,
                    user_id="al",
                    app_version=version,
                )
            )
        db.session.commit()
        message = push.send(users=["al"], title="Hi")
        entries = {entry["target"]["kind"]: entry for entry in push.explain(message.id)}
    assert {kind: entry["status"] for kind, entry in entries.items()} == {
        "fcm": "sent",
        "apns": "sent",
    }
    [fcm_message] = push_fake_fcm.messages
    assert entries["fcm"]["events"][-1]["serviceId"] == fcm_message.name
    assert entries["fcm"]["target"]["label"] == "Android app 1.3"
    assert entries["fcm"]["detail"].startswith("Firebase Cloud Messaging (FCM) accepted it")
    assert entries["apns"]["events"][-1]["serviceId"]  # the apns-id
    assert entries["apns"]["target"]["label"] == "iOS app 2.0"
    assert entries["apns"]["events"][1]["statusCode"] == 200


def test_an_fcm_address_that_answers_404_keeps_the_devices(
    make_app: Callable[..., Flask], push_fake_fcm: Any
) -> None:
    """PUSH_FCM_BASE_URL with a wrong path: the devices stay, and the operator is
    told what to check, not that each device's token is unregistered."""
    from flask_push.testing.fcm import make_registration_token

    config = {**push_fake_fcm.app_config(), "PUSH_FCM_BASE_URL": f"{push_fake_fcm.base_url}/x"}
    app = make_app(PUSH_QUEUE="inline", **config)
    with app.app_context():
        db.session.add(
            push.models.Installation(
                app_id="shop", device_token=make_registration_token(), device_type="android",
                user_id="al",
            )
        )  # fmt: skip
        db.session.commit()
        message = push.send(users=["al"], title="Hi")
        [entry] = push.explain(message.id)
        [phone] = push.user_targets("al")
    assert (entry["status"], entry["reason"]) == ("failed", "rejected")
    assert "check PUSH_FCM_BASE_URL and the project" in entry["detail"]
    assert "unregistered" not in entry["detail"]
    assert phone["status"] == "active"


def test_explain_by_user_and_the_deliveries_endpoint(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    client = live.test_client()
    for name in "abc":
        subscribe(client, push_fake_webpush, name, user="al")
    bob, _ = subscribe(client, push_fake_webpush, "d", user="bob")
    push_fake_webpush.fail_next(400, subscriber=push_fake_webpush.subscribers[0])
    id = send(client, ["al", "bob"])
    with live.app_context():
        assert len(push.explain(id)) == 4
        [only] = push.explain(id, "bob")
        assert only["target"]["id"] == bob
        assert push.explain(id, "nobody") == []
        assert [e["status"] for e in push.explain(id, status="failed")] == ["failed"]
        assert len(push.explain(id, skip=1, take=2)) == 2
        with pytest.raises(ValidationError) as caught:
            push.explain("msg_nope")
        assert caught.value.code == "not_found"
        with pytest.raises(ValidationError) as caught:
            push.explain(id, status="lost")
        assert caught.value.field == "status"

    url = f"/push/messages/{id}/deliveries"
    page = client.get(url, headers=ADMIN).get_json()
    assert page["totalCount"] == 4 and len(page["items"]) == 4
    with live.app_context():
        assert page["items"] == push.explain(id)
    page = client.get(f"{url}?userId=al&skip=1&take=1", headers=ADMIN).get_json()
    assert page["totalCount"] == 3 and len(page["items"]) == 1
    page = client.get(f"{url}?status=failed", headers=ADMIN).get_json()
    assert page["totalCount"] == 1 and page["items"][0]["reason"] == "rejected"
    for query, field in (("status=lost", "status"), ("take=0", "take"), ("skip=x", "skip")):
        answer = client.get(f"{url}?{query}", headers=ADMIN)
        assert answer.status_code == 400, query
        assert answer.get_json()["error"]["field"] == field
    for headers in ({}, as_user("al")):
        answer = client.get(url, headers=headers)
        assert answer.status_code == 403
        assert answer.get_json()["error"]["code"] == "forbidden"
    assert client.get("/push/messages/msg_nope/deliveries", headers=ADMIN).status_code == 404


def test_deliveries_stay_with_the_user_they_were_sent_to(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """After she deletes her subscription, or her browser signs in as someone else,
    her deliveries are still found as hers, and never shown as the new owner's."""
    client = live.test_client()
    gone, _ = subscribe(client, push_fake_webpush, "a", user="al")
    moved, browser = subscribe(client, push_fake_webpush, "b", user="al")
    id = send(client, ["al"])
    assert client.delete(f"/push/subscriptions/{gone}", headers=as_user("al")).status_code == 204
    # the same browser, signed in as bob now: its subscription becomes his
    again = client.post("/push/subscriptions", json=browser.info, headers=as_user("bob"))
    assert again.status_code in (200, 201) and again.get_json()["id"] == moved

    url = f"/push/messages/{id}/deliveries"
    mine = client.get(f"{url}?userId=al", headers=ADMIN).get_json()
    assert mine["totalCount"] == 2
    assert {e["target"]["id"]: e["target"]["userId"] for e in mine["items"]} == {
        gone: "al",
        moved: "al",
    }
    assert by_target(mine["items"])[gone]["target"]["label"] == "Browser (deleted)"
    assert client.get(f"{url}?userId=bob", headers=ADMIN).get_json()["totalCount"] == 0
    with live.app_context():
        assert [e["target"]["userId"] for e in push.explain(id)] == ["al", "al"]
        [his] = push.user_targets("bob")
    assert his["id"] == moved and his["recentDeliveries"] == []
    runner = live.test_cli_runner()
    shown = runner.invoke(args=["push", "explain", id, "--user", "al"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count(", user al): sent [accepted]") == 2, shown.output


def test_what_waits_for_a_browser_is_not_sent_once_someone_else_signs_in_on_it(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """A message to al, scheduled (or waiting for a retry, or quiet hours): her
    browser is signed in as bob before it goes. It is not his to see: it ends
    ``gone``, saying why, and the browser gets nothing; her other browser gets it."""
    client = live.test_client()
    kept, hers = subscribe(client, push_fake_webpush, "a", user="al")
    moved, browser = subscribe(client, push_fake_webpush, "b", user="al")
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    id = send(client, ["al"], sendAt=later)
    again = client.post("/push/subscriptions", json=browser.info, headers=as_user("bob"))
    assert again.status_code == 200 and again.get_json()["id"] == moved
    with live.app_context():
        make_due(id)
        push.dispatch_due()
        entries = by_target(push.explain(id))
    assert browser.received == [] and [p.json()["title"] for p in hers.received] == ["Order #42"]
    assert (entries[kept]["status"], entries[kept]["reason"]) == ("sent", "accepted")
    entry = entries[moved]
    assert (entry["status"], entry["reason"]) == ("gone", "target_changed_hands")
    assert entry["target"]["userId"] == "al"
    assert entry["detail"].startswith("By ") and entry["detail"].endswith(
        "its subscription had been registered again for someone else (another user, or no "
        "one, signed in on that browser or device), so it was not sent: it was not theirs "
        "to see."
    )
    assert [e["what"] for e in entry["events"]] == ["queued", "gone"]


def test_what_waits_for_a_device_is_not_sent_once_someone_else_signs_in_on_it(
    sending_app: Callable[..., Flask], push_fake_fcm: Any
) -> None:
    """The same for a phone: bob signs in on al's phone (the app registers its token
    for him) before her scheduled message goes."""
    from flask_push.testing.fcm import make_registration_token

    app = sending_app()
    client = app.test_client()
    device = {"appId": "shop", "deviceType": "android", "deviceToken": make_registration_token()}
    phone = client.post("/push/installations", json=device, headers=as_user("al")).get_json()
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    id = send(client, ["al"], sendAt=later)
    again = client.post("/push/installations", json=device, headers=as_user("bob"))
    assert again.status_code == 200 and again.get_json()["id"] == phone["id"]
    with app.app_context():
        make_due(id)
        push.dispatch_due()
        [entry] = push.explain(id)
    assert (entry["status"], entry["reason"]) == ("gone", "target_changed_hands")
    assert "its installation had been registered again for someone else" in entry["detail"]
    assert push_fake_fcm.messages == []


def test_cancel_a_scheduled_message(live: Flask, push_fake_webpush: FakePushService) -> None:
    client = live.test_client()
    subscribe(client, push_fake_webpush, "a")
    subscribe(client, push_fake_webpush, "b")
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    id = send(client, ["al"], sendAt=later)
    assert (
        client.post(f"/push/messages/{id}/cancel", json={}, headers=as_user("al")).status_code
        == 403
    )
    answer = client.post(f"/push/messages/{id}/cancel", json={}, headers=ADMIN)
    assert answer.status_code == 200, answer.get_json()
    shown = answer.get_json()
    assert shown["id"] == id and shown["status"] == "done"
    assert shown["counts"]["cancelled"] == 2 and shown["counts"]["queued"] == 0
    with live.app_context():
        make_due(id)  # its time comes: nothing goes out
        push.dispatch_due()
        entries = push.explain(id)
    assert push_fake_webpush.requests == []
    for entry in entries:
        assert entry["status"] == "cancelled" and entry["reason"] == "cancelled"
        assert [e["what"] for e in entry["events"]] == ["queued", "cancelled"]
        assert entry["detail"].startswith("An operator cancelled the message at ")
    assert client.post("/push/messages/msg_nope/cancel", json={}, headers=ADMIN).status_code == 404


def test_no_provider_stops_advising_a_retry_once_the_message_is_cancelled(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """An iPhone without an APNs provider fails as the message is queued, with the
    advice to retry what failed; once the message is cancelled a retry sends none of
    it, and every surface says so beside that advice."""
    client = live.test_client()
    subscribe(client, push_fake_webpush, "a")
    with live.app_context():
        db.session.add(
            push.models.Installation(
                app_id="shop", device_token="cd" * 32, device_type="ios", user_id="al"
            )
        )
        db.session.commit()
    id = send(client, ["al"], sendAt=(datetime.now(timezone.utc) + timedelta(hours=1)).isoformat())
    with live.app_context():
        [before] = push.explain(id, status="failed")
    assert before["reason"] == "no_provider"
    assert before["detail"].endswith("then retry what failed.")
    assert outcomes.CANCELLED_SINCE not in before["detail"]
    assert client.post(f"/push/messages/{id}/cancel", json={}, headers=ADMIN).status_code == 200
    with live.app_context():
        [after] = push.explain(id, status="failed")
        with pytest.raises(ValidationError) as refused:  # indeed: nothing is retried
            push.retry_failed(id)
        assert refused.value.code == "message_cancelled"
    counts = client.get(f"/push/messages/{id}", headers=ADMIN).get_json()["counts"]
    assert (counts["failed"], counts["queued"]) == (1, 0)
    assert after["detail"] == f"{before['detail']} {outcomes.CANCELLED_SINCE}"
    [problem] = client.get(f"/push/messages/{id}", headers=ADMIN).get_json()["problems"]
    assert problem["detail"] == after["detail"]
    explained = live.test_cli_runner().invoke(args=["push", "explain", id, "--status", "failed"])
    assert outcomes.CANCELLED_SINCE in explained.output
    with live.app_context():
        phone = next(t for t in push.user_targets("al") if t["kind"] == "apns")
    assert phone["recentDeliveries"][0]["detail"] == after["detail"]


def test_cancel_mid_fan_out_stops_after_the_batch_in_hand(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    from flask_push import signals
    from flask_push.dispatch import Dispatcher

    with live.app_context():
        for number in range(30):
            add_subscription("al", **stored(push_fake_webpush.subscribe(f"s{number}")))
        # queued for later, so that the inline queue leaves it to the worker below
        message = push.send(
            users=["al"], title="Sale", send_at=datetime.now(timezone.utc) + timedelta(hours=1)
        )
        make_due(message.id)
        cancelled: dict[str, Any] = {}

        def cancel_on_first(sender: Any, **_: Any) -> None:
            # on the worker's database thread, once the first outcomes are written
            if not cancelled:
                cancelled.update(push.cancel(message.id))

        worker = Dispatcher(live, push.models, db.engine, push.settings, batch_size=5)
        try:
            with signals.delivery_succeeded.connected_to(cancel_on_first, sender=live):
                assert worker.run_once(message_id=message.id) == 5  # one batch in hand
                assert worker.run_until_idle(message_id=message.id) == 0  # nothing more
        finally:
            worker.close()
        statuses = [row.status for row in rows_of(message.id)]
        entries = push.explain(message.id)
    assert statuses[:5] == ["sent"] * 5  # the batch in hand finished, and is kept
    assert statuses[5:] == ["cancelled"] * 25
    assert cancelled["counts"]["cancelled"] == 25
    assert len(push_fake_webpush.pushes) == 5  # nothing cancelled went out
    for entry in entries[:5]:
        assert [e["what"] for e in entry["events"]] == ["queued", "attempt", "sent"]
    for entry in entries[5:]:
        assert [e["what"] for e in entry["events"]] == ["queued", "cancelled"]


def test_a_cancel_reaches_the_pushes_waiting_for_a_slot(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """A worker holds more than it has on the network (a push service's lane takes
    100 at a time, and a batch waits behind them). The cancel, made elsewhere, marks
    the waiting ones cancelled, and the worker sends none of them: only the pushes on
    the network when the cancel came go out."""

    from flask_push.dispatch import _CANCEL_CHECK_EVERY, Dispatcher

    service = push_fake_webpush
    with live.app_context():
        for number in range(300):
            subscriber = service.subscribe(f"s{number}")
            db.session.add(
                push.models.Subscription(
                    endpoint=subscriber.endpoint, p256dh=subscriber.p256dh,
                    auth=subscriber.auth, user_id="al", topics=[],
                )
            )  # fmt: skip
        db.session.commit()
        message = push.send(
            users=["al"], title="Sale", send_at=datetime.now(timezone.utc) + timedelta(hours=1)
        )
        make_due(message.id)
        message_id = message.id
        worker = Dispatcher(live, push.models, db.engine, push.settings, batch_size=50)
    with sending_held(service, worker, message_id):
        on_the_network = service.wait_in_flight(100)
        with live.app_context():
            shown = push.cancel(message_id)
        time.sleep(_CANCEL_CHECK_EVERY * 3)  # the worker looks, and takes them back
    assert on_the_network == 100
    # every unsent one, as the cancel sees it; the outcomes of those on the network
    # replace the cancel, as what really happened
    assert shown["counts"]["cancelled"] == 300
    assert len(service.pushes) == 100  # none of the cancelled went out
    with live.app_context():
        rows = rows_of(message_id)
    assert Counter(row.status for row in rows) == {"sent": 100, "cancelled": 200}
    # never tried, as their timelines say (they said one attempt each)
    assert {row.attempts for row in rows if row.status == "cancelled"} == {0}
    assert {len(row.events) for row in rows if row.status == "cancelled"} == {2}


@contextmanager
def before_statement(
    engine: sa.Engine, thread: str, *words: str, then: Callable[[], None]
) -> Iterator[list[bool]]:
    """Run ``then`` once, just before the first statement with all of ``words`` that
    a thread named ``thread`` runs on ``engine``."""
    ran: list[bool] = []

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (
            not ran
            and threading.current_thread().name == thread
            and all(word in statement for word in words)
        ):
            ran.append(True)
            then()

    sa.event.listen(engine, "before_cursor_execute", hook)
    try:
        yield ran
    finally:
        sa.event.remove(engine, "before_cursor_execute", hook)


on_postgres = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


@on_postgres
def test_a_cancel_while_a_worker_writes_its_outcomes_waits_its_turn(
    live: Flask, push_fake_webpush: FakePushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker wrote a batch's outcomes by kind (the sent ones, then the retries),
    each in the order its answers came, and an operator's cancel locked the rows in
    the order of their ids: the two deadlocked, and the cancel's request got a 500.
    (Here the lower id is the retry, written second.)"""
    from flask_push import dispatch

    monkeypatch.setattr(dispatch, "FLUSH_EVERY", 1.0)  # both answers in one write
    client = live.test_client()
    _, first = subscribe(client, push_fake_webpush, "a")
    subscribe(client, push_fake_webpush, "b")
    push_fake_webpush.fail_next(503, subscriber=first)
    with live.app_context():
        id = push.send(users=["al"], title="Sale", send_at=later()).id
        make_due(id)
        worker = Dispatcher(live, push.models, db.engine, push.settings)
        engine = db.engine
    answers: list[Any] = []

    def cancel() -> None:
        answers.append(live.test_client().post(f"/push/messages/{id}/cancel", headers=ADMIN))

    def cancel_meanwhile() -> None:
        threading.Thread(target=cancel).start()
        time.sleep(0.5)  # the cancel has locked what it could, and waits

    retries = ("UPDATE push_deliveries SET", "due_at=")
    with before_statement(engine, "flask-push-db", *retries, then=cancel_meanwhile) as ran:
        with live.app_context():
            worker.run_until_idle()
        worker.close()
    assert ran
    assert wait_until(lambda: answers, 30)
    assert answers[0].status_code == 200, answers[0].get_json()
    with live.app_context():
        assert sorted(row.status for row in rows_of(id)) == ["cancelled", "sent"]


@on_postgres
def test_a_cancel_made_while_a_retry_runs_stops_what_it_retries(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """An operator's cancel came between another's retry of what failed reading that
    the message was not cancelled and its queueing of the failed push again: the
    cancel locked only what was queued, and the cancelled message sent the failed
    push all the same."""
    client = live.test_client()
    _, refusing = subscribe(client, push_fake_webpush, "a")
    _, busy = subscribe(client, push_fake_webpush, "b")
    push_fake_webpush.fail_next(400, subscriber=refusing)
    push_fake_webpush.fail_next(503, subscriber=busy)  # queued for a retry
    id = send(client, ["al"])
    cancelled: list[Any] = []

    def cancel() -> None:
        with live.app_context():
            cancelled.append(push.cancel(id))
            db.session.remove()

    def cancel_meanwhile() -> None:
        thread = threading.Thread(target=cancel)
        thread.start()
        thread.join(2)  # it waits for the retry's commit

    with live.app_context():
        assert sorted(row.status for row in rows_of(id)) == ["failed", "queued"]
        main = threading.current_thread().name
        retry = "UPDATE push_deliveries SET status="
        with before_statement(db.engine, main, retry, then=cancel_meanwhile) as ran:
            try:
                push.retry_failed(id)
            except ValidationError as refused:
                assert refused.code == "message_cancelled"
        assert ran
        assert wait_until(lambda: cancelled, 30)
        assert cancelled[0]["cancelledAt"] is not None
        assert "queued" not in {row.status for row in rows_of(id)}
    # the refused push was not sent again
    assert push_fake_webpush.pushes == []


def test_retry_failed(live: Flask, push_fake_webpush: FakePushService) -> None:
    client = live.test_client()
    refused_id, refused = subscribe(client, push_fake_webpush, "a")
    _, dead = subscribe(client, push_fake_webpush, "b")
    subscribe(client, push_fake_webpush, "c")
    dead.expire()
    push_fake_webpush.fail_next(400, subscriber=refused)
    id = send(client, ["al"])
    with live.app_context():
        before = {e["status"] for e in push.explain(id)}
    assert before == {"sent", "failed", "gone"}
    answer = client.post(f"/push/messages/{id}/retry", json={}, headers=ADMIN)
    assert answer.status_code == 200, answer.get_json()
    counts = answer.get_json()["counts"]
    # the inline queue sent it again at once; the gone one stays gone
    assert (counts["sent"], counts["failed"], counts["gone"]) == (2, 0, 1)
    with live.app_context():
        again = by_target(push.explain(id))[refused_id]
        assert push.retry_failed(id)["counts"]["queued"] == 0  # nothing failed now
    kinds = [e["what"] for e in again["events"]]
    assert kinds == ["queued", "attempt", "failed", "retry", "attempt", "sent"]
    assert "An operator asked at" in again["events"][3]["detail"]
    assert again["attempts"] == 1
    assert len(refused.received) == 1
    assert (
        client.post(f"/push/messages/{id}/retry", json={}, headers=as_user("al")).status_code == 403
    )


def test_a_push_given_up_on_says_to_retry_it_once_the_service_is_back(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """A push its service refused with 503 until flask-push gave up said only "gave up
    after 8 attempts": nothing of what to do. It says to retry what failed (which
    sends it), as a push that had no provider does."""
    client = live.test_client()
    subscribe(client, push_fake_webpush, "a")
    push_fake_webpush.fail_next(503, times=2)
    id = send(client, ["al"])
    with live.app_context():
        make_due(id)
        dispatcher = Dispatcher(live, push.models, db.engine, push.settings, max_attempts=2)
        try:
            dispatcher.run_once(message_id=id)
        finally:
            dispatcher.close()
        [entry] = push.explain(id)
    assert (entry["status"], entry["reason"]) == ("failed", "gave_up")
    assert entry["detail"].endswith(
        "flask-push gave up after 2 attempts: once the browser's push service takes pushes "
        "again, retry what failed."
    )
    [problem] = client.get(f"/push/messages/{id}", headers=ADMIN).get_json()["problems"]
    assert problem["detail"] == entry["detail"]
    # as said: the retry sends it
    answer = client.post(f"/push/messages/{id}/retry", json={}, headers=ADMIN)
    assert answer.get_json()["counts"]["sent"] == 1


def test_user_targets(live: Flask, push_fake_webpush: FakePushService) -> None:
    client = live.test_client()
    first, _ = subscribe(client, push_fake_webpush, "a")
    second, dead = subscribe(client, push_fake_webpush, "b")
    with live.app_context():
        db.session.add(
            push.models.Installation(
                app_id="shop", device_token="cd" * 32, device_type="ios", user_id="al",
                app_version="2.0",
            )
        )  # fmt: skip
        db.session.commit()
    dead.expire()
    ids = [send(client, ["al"], title=f"Note {n}") for n in range(3)]
    with live.app_context():
        found = push.user_targets("al", recent=2)
        assert push.user_targets("nobody") == []
    assert [t["kind"] for t in found] == ["webpush", "webpush", "apns"]
    web, gone, phone = found
    assert web["label"] == "Chrome on Android" and web["status"] == "active"
    assert web["lastSeenAt"] is not None and web["deadSince"] is None
    assert [d["messageId"] for d in web["recentDeliveries"]] == ids[:0:-1]
    assert [d["title"] for d in web["recentDeliveries"]] == ["Note 2", "Note 1"]
    assert web["recentDeliveries"][0]["status"] == "sent"
    assert gone["status"] == "dead" and gone["deadSince"] is not None
    assert "410" in gone["deadReason"] or "expired" in gone["deadReason"]
    assert "this subscription is gone: " in gone["deadDetail"]
    assert gone["deadDetail"].endswith(". It is never used again.")
    assert gone["deadReason"] in gone["deadDetail"]
    # the first send found it gone; later sends leave dead targets out
    assert [d["messageId"] for d in gone["recentDeliveries"]] == ids[:1]
    assert gone["recentDeliveries"][0]["status"] == "gone"
    assert phone["label"] == "iOS app 2.0"
    assert phone["recentDeliveries"][0]["reason"] == "no_provider"
    with live.app_context():
        [entry] = push.explain(ids[2], status="failed")
    # what to do, not only what is missing
    assert entry["detail"] == (
        "No apns provider is configured, so it could not be sent: set PUSH_APNS_KEY, "
        "PUSH_APNS_KEY_ID, PUSH_APNS_TEAM_ID and PUSH_APNS_TOPIC, or store one for its app "
        "(POST /providers), then retry what failed."
    )
    # each recent delivery says what happened as its message's deliveries say it
    assert phone["recentDeliveries"][0]["detail"] == entry["detail"]
    with live.app_context():
        [sent] = push.explain(ids[2], status="sent")
    assert web["recentDeliveries"][0]["detail"] == sent["detail"]
    assert sent["detail"].startswith("The browser's push service accepted it at ")

    answer = client.get("/push/users/al/targets", headers=ADMIN)
    assert answer.status_code == 200
    assert [t["id"] for t in answer.get_json()["items"]] == [first, second, phone["id"]]
    assert client.get("/push/users/al/targets", headers=as_user("al")).status_code == 403
    assert client.get("/push/users/nobody/targets", headers=ADMIN).status_code == 404


def test_a_push_in_a_workers_hand_is_said_alike_everywhere(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """A queued delivery a worker holds is on its way: the message's deliveries say
    so, and the user's targets and the message's problems said the older words of
    its last event instead (a retry "due at" a time already past)."""
    client = live.test_client()
    subscribe(client, push_fake_webpush, "a")
    push_fake_webpush.fail_next(503)
    id = send(client, ["al"])
    d = push.models.Delivery
    with live.app_context():
        # the retry came due, and a worker took it: its lease runs for a while
        db.session.execute(
            sa.update(d)
            .where(d.message_id == id)
            .values(due_at=utcnow(), lease_until=utcnow() + timedelta(minutes=5))
        )
        db.session.commit()
        [entry] = push.explain(id)
        [web] = push.user_targets("al")
    assert entry["detail"].startswith("A worker took it and is sending it now")
    assert web["recentDeliveries"][0]["detail"] == entry["detail"]
    [problem] = client.get(f"/push/messages/{id}", headers=ADMIN).get_json()["problems"]
    assert problem["detail"] == entry["detail"]


def test_a_push_no_worker_takes_says_so_everywhere(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """With no worker running, a scheduled push past its time said "Queued for
    sending. It is due at 17:51 UTC." at 18:30, and a retry "it will be tried again
    at" a time long past: as if all were well. Every surface says it is overdue and
    what to check."""
    client = live.test_client()
    subscribe(client, push_fake_webpush, "a")
    scheduled = send(client, ["al"], sendAt=later().isoformat())
    push_fake_webpush.fail_next(503, retry_after=60)
    retried = send(client, ["al"])
    with live.app_context():
        [waiting] = push.explain(scheduled)
        assert "no worker has taken it" not in waiting["detail"]  # not due yet
        # as if 10 minutes had passed since both came due, with no worker running
        since = datetime.now(timezone.utc) - timedelta(minutes=10)
        for id in (scheduled, retried):
            make_due(id, due_at=since)
        [late] = push.explain(scheduled)
        [late_retry] = push.explain(retried)
        web = push.user_targets("al")[0]["recentDeliveries"]
    overdue = (
        f"It has been due since {outcomes.clock(since)} (10 min ago) and no worker has "
        "taken it: no delivery worker is running for this app (`flask push worker`, or "
        "the process that runs the thread queue, stopped or was never started), or the "
        "workers are far behind (the console's overview and GET /health show the outbox)."
    )
    assert late["detail"] == f"{waiting['detail']} {overdue}"
    assert late_retry["detail"].startswith("The browser's push service answered 503 ")
    assert late_retry["detail"].endswith(overdue)
    # alike in the user's targets, the message's problems and on the command line
    assert [d["detail"] for d in web] == [late_retry["detail"], late["detail"]]
    [problem] = client.get(f"/push/messages/{retried}", headers=ADMIN).get_json()["problems"]
    assert problem["detail"] == late_retry["detail"]
    shown = live.test_cli_runner().invoke(args=["push", "explain", scheduled])
    assert shown.exit_code == 0 and f"  {late['detail']}\n" in shown.output


def test_user_targets_are_oldest_first_across_browsers_and_devices(app: Flask) -> None:
    now = datetime.now(timezone.utc)
    made: dict[str, str] = {}
    with app.app_context():
        # written in another order than made: neither the order of writing nor the
        # kind decides the order, only when each was registered
        for name, hours_ago in (("laptop", 0.5), ("phone", 3), ("tablet", 1), ("work", 2)):
            created = now - timedelta(hours=hours_ago)
            if name in ("laptop", "work"):
                row = add_subscription("al", created_at=created)
            else:
                row = push.models.Installation(
                    app_id="shop", device_token=name, device_type="android", user_id="al",
                    subscriptions=[], created_at=created,
                )  # fmt: skip
                db.session.add(row)
                db.session.commit()
            made[name] = row.id
        found = push.user_targets("al")
    oldest_first = [made[name] for name in ("phone", "work", "tablet", "laptop")]
    assert [t["id"] for t in found] == oldest_first
    answer = app.test_client().get("/push/users/al/targets", headers=ADMIN)
    assert [t["id"] for t in answer.get_json()["items"]] == oldest_first


def test_explain_on_the_command_line(live: Flask, push_fake_webpush: FakePushService) -> None:
    client = live.test_client()
    subscribe(client, push_fake_webpush, "a")
    _, gone = subscribe(client, push_fake_webpush, "b", user="bob")
    gone.expire()
    id = send(client, ["al", "bob"])
    runner = live.test_cli_runner()
    result = runner.invoke(args=["push", "explain", id])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Chrome on Android (webpush sub_") and lines[0].endswith(
        ", user al): sent [accepted]"
    )
    assert lines[1].startswith("  The browser's push service accepted it at ")
    assert lines[2].split()[2:4] == ["queued", "Queued"]
    assert lines[3].split()[2:4] == ["attempt", "Attempt"]
    assert "answered 410 Gone at" in result.output
    only = runner.invoke(args=["push", "explain", id, "--user", "bob"])
    assert only.exit_code == 0 and "user al" not in only.output and "user bob" in only.output
    unknown = runner.invoke(args=["push", "explain", "msg_nope"])
    assert unknown.exit_code == 1
    assert unknown.output.strip() == "Error: No message with the id 'msg_nope'."


def test_explain_on_the_command_line_filters_and_pages(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    """An operator with 500 devices to read asks for the failed ones, a page at a time."""
    client = live.test_client()
    for user in ("al", "bo", "cy"):
        subscribe(client, push_fake_webpush, "a", user=user)
    _, gone = subscribe(client, push_fake_webpush, "b", user="dee")
    gone.expire()
    id = send(client, ["al", "bo", "cy", "dee"])
    runner = live.test_cli_runner()

    def explain(*options: str) -> list[str]:
        result = runner.invoke(args=["push", "explain", id, *options])
        assert result.exit_code == 0, result.output
        return [line for line in result.output.splitlines() if line and line[0] != " "]

    assert explain("--status", "gone") == [
        next(line for line in explain() if line.endswith("user dee): gone [unsubscribed]"))
    ]
    first, _, counted = explain("--take", "2")[-3:]
    assert counted == "1-2 of 4; the next with --skip 2."
    page = explain("--skip", "2", "--take", "2")
    assert page[-1] == "3-4 of 4." and first not in page
    assert explain("--status", "sent", "--skip", "3") == [
        f"Message {id} has 3 such deliveries; --skip 3 passed them all."
    ]
    assert explain("--status", "failed") == [f"Message {id} has no failed deliveries."]
    wrong = runner.invoke(args=["push", "explain", id, "--status", "lost"])
    assert wrong.exit_code == 2 and "'lost' is not one of" in wrong.output
    too_many = runner.invoke(args=["push", "explain", id, "--take", "101"])
    assert too_many.exit_code == 2 and "1<=x<=100" in too_many.output
    # refused by the page's own rules: named by the command's options, not the API's
    for options, said in (
        (["--user", ""], "Error: --user: must not be empty"),
        (["--skip", "2000000000"], "Error: --skip: must be a whole number from 0 to "),
    ):
        refused = runner.invoke(args=["push", "explain", id, *options])
        assert refused.exit_code == 2
        assert refused.output.splitlines()[-1].startswith(said), refused.output


def test_a_message_without_deliveries_says_why(live: Flask) -> None:
    """Not a bare "has no deliveries" (exit 0): deliveries are made at the send, for
    what of the audience was active then."""
    with live.app_context():
        id = push.send(users=["al"], title="Nobody home").id
    runner = live.test_cli_runner()
    shown = runner.invoke(args=["push", "explain", id])
    assert shown.exit_code == 0, shown.output
    assert shown.output == (
        f"Message {id} has no deliveries: no browser or device of its audience was active "
        "when it was sent (a dead one is never sent to, and one registered later does not "
        "get it).\n"
    )
    theirs = runner.invoke(args=["push", "explain", id, "--user", "zed"])
    assert theirs.output == (
        f"Message {id} has no deliveries to user zed: they were not in its audience, or "
        "had no browser or device active when it was sent.\n"
    )
    page = live.test_client().get(f"/push/console/messages/{id}", headers=ADMIN)
    assert "No delivery: no browser or device of its audience was active" in page.get_data(
        as_text=True
    )
    # and over HTTP, which answered an empty list and nothing of why
    client = live.test_client()
    url = f"/push/messages/{id}/deliveries"
    answer = client.get(url, headers=ADMIN).get_json()
    assert answer == {"totalCount": 0, "items": [], "detail": shown.output.strip()}
    assert client.get(f"{url}?userId=zed", headers=ADMIN).get_json()["detail"] == (
        theirs.output.strip()
    )


def test_an_empty_page_of_deliveries_says_why_over_http(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    client = live.test_client()
    subscribe(client, push_fake_webpush, "a")
    id = send(client, ["al"])
    url = f"/push/messages/{id}/deliveries"
    assert client.get(url, headers=ADMIN).get_json()["detail"] is None
    assert client.get(f"{url}?status=failed", headers=ADMIN).get_json()["detail"] == (
        f"Message {id} has no failed deliveries."
    )
    assert client.get(f"{url}?skip=5", headers=ADMIN).get_json()["detail"] == (
        f"Message {id} has 1 such delivery; skip=5 passed them all."
    )


def test_explain_shows_what_came_from_outside_on_its_own_line(live: Flask) -> None:
    """An app version and a user id are the shopper's and the host's words: on the
    operator's terminal, a control sequence, a line break or a bidi override in
    them is written out, so it neither runs nor forges or reorders a line."""
    user = "eve): sent [accepted]\n  Delivered.\x1b[8m"
    with live.app_context():
        db.session.add(
            push.models.Installation(
                app_id="shop",
                device_type="android",
                device_token="a" * 40,
                app_version="\x1b]0;title\x07\x1b[2J\rRED\u202eEVIL",
                user_id=user,
            )
        )
        db.session.commit()
        id = push.send(users=[user], title="x").id
    result = live.test_cli_runner().invoke(args=["push", "explain", id])
    assert result.exit_code == 0, result.output
    assert not {"\x1b", "\x07", "\r", "\u202e"} & set(result.output)
    [first, *rest] = result.output.splitlines()
    assert first.startswith("Android app \\x1b]0;title\\x07\\x1b[2J\\x0dRED\\u202eEVIL (fcm ins_")
    assert first.endswith(
        ", user eve): sent [accepted]\\n  Delivered.\\x1b[8m): failed [no_provider]"
    )
    assert all(line.startswith("  ") for line in rest)


@pytest.mark.parametrize(
    ("agent", "label"),
    [
        (CHROME_ANDROID, "Chrome on Android"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like "
            "Gecko) Version/17.5 Safari/605.1.15",
            "Safari on macOS",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox on Windows",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/18.2 Mobile/15E148 Safari/604.1",
            "Safari on iOS",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
            "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
            "Samsung Internet on Android",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
            "Opera on Linux",
        ),
        (
            "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36",
            "Chrome on ChromeOS",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Firefox on Linux",
        ),
        ("curl/8.5.0", "Browser"),
        (None, "Browser"),
    ],
)
def test_browser_labels(agent: str | None, label: str) -> None:
    from flask_push.labels import browser_label

    assert browser_label(agent) == label


def test_app_labels() -> None:
    from flask_push.labels import app_label

    assert app_label("ios", "2.0") == "iOS app 2.0"
    assert app_label("android", "1.3") == "Android app 1.3"
    assert app_label("android", None) == "Android app"


def test_user_targets_reads_a_bounded_number_of_queries(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    client = live.test_client()

    def queries(user: str, targets: int) -> int:
        for n in range(targets):
            subscribe(client, push_fake_webpush, f"{user}-{n}", user=user)
        send(client, [user])
        send(client, [user])
        seen: list[str] = []

        def count(*args: Any) -> None:
            seen.append(args[2])

        with live.app_context():
            sa.event.listen(db.engine, "before_cursor_execute", count)
            try:
                found = push.user_targets(user)
            finally:
                sa.event.remove(db.engine, "before_cursor_execute", count)
        assert len(found) == targets
        assert all(len(target["recentDeliveries"]) == 2 for target in found)
        return len(seen)

    assert queries("few", 2) == queries("many", 9) == 3


def test_a_push_on_the_network_when_cancelled_keeps_what_happened(
    live: Flask, push_fake_webpush: FakePushService
) -> None:
    import threading

    from flask_push.dispatch import Dispatcher

    client = live.test_client()
    subscribe(client, push_fake_webpush, "a")
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    id = send(client, ["al"], sendAt=later)
    with live.app_context():
        make_due(id)
        worker = Dispatcher(live, push.models, db.engine, push.settings)
    push_fake_webpush.hold()
    sending = threading.Thread(target=lambda: worker.run_once(message_id=id))
    sending.start()
    try:
        push_fake_webpush.wait_in_flight(1)
        with live.app_context():
            assert push.cancel(id)["counts"]["cancelled"] == 1
    finally:
        push_fake_webpush.release()
        sending.join()
        worker.close()
    with live.app_context():
        [entry] = push.explain(id)
    # it reached the push service: the record says so, not "cancelled"
    assert entry["status"] == "sent" and len(push_fake_webpush.pushes) == 1
    assert [e["what"] for e in entry["events"]] == ["queued", "attempt", "sent"]


def _an_iphone_apns_refuses(
    make_app: Callable[..., Flask], push_fake_apns: Any, reason: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Al's one iPhone, a push to it that APNs answers 400 ``reason``: its delivery's
    timeline entry, and the iPhone as his targets show it after."""
    app = make_app(PUSH_QUEUE="inline", **push_fake_apns.app_config())
    with app.app_context():
        db.session.add(
            push.models.Installation(
                app_id="shop", device_token="ab" * 32, device_type="ios", user_id="al"
            )
        )
        db.session.commit()
        push_fake_apns.fail_next(400, reason)
        message = push.send(users=["al"], title="Order #42")
        [entry] = push.explain(message.id)
        [phone] = push.user_targets("al")
    return entry, phone


def test_a_token_apns_refuses_says_what_to_check(
    make_app: Callable[..., Flask], push_fake_apns: Any
) -> None:
    """APNs' 400 BadDeviceToken kills the installation like a 410, but its cause may be
    the other environment (every iPhone at once): the sentence keeps APNs' own words."""
    entry, phone = _an_iphone_apns_refuses(make_app, push_fake_apns, "BadDeviceToken")
    assert (entry["status"], entry["reason"]) == ("gone", "unsubscribed")
    assert entry["detail"].startswith("Apple's push service (APNs) answered 400 BadDeviceToken (")
    assert "PUSH_APNS_SANDBOX" in entry["detail"]
    assert entry["detail"].endswith("this installation is dead and will not be used again.")
    assert phone["status"] == "dead"


def test_a_token_of_another_app_fails_and_keeps_the_installation(
    make_app: Callable[..., Flask], push_fake_apns: Any
) -> None:
    """APNs' 400 DeviceTokenNotForTopic: a PUSH_APNS_TOPIC naming another app of the
    team (its key signs for all of them) gets it for every iPhone, which were all
    dropped for good. The push fails with what to check; the installation stays."""
    entry, phone = _an_iphone_apns_refuses(make_app, push_fake_apns, "DeviceTokenNotForTopic")
    assert (entry["status"], entry["reason"]) == ("failed", "rejected")
    assert "check PUSH_APNS_TOPIC" in entry["detail"]
    assert "dead" not in entry["detail"]
    assert phone["status"] == "active"


def test_a_push_a_worker_holds_says_so(make_app: Callable[..., Flask]) -> None:
    """While a worker has a push on its way, explain said "Queued for sending.", as
    of one nobody had touched; it says a worker is sending it, and until when the
    worker holds it (when another takes it, should that worker stop)."""
    app = make_app(PUSH_QUEUE="inline")
    with app.app_context():
        add_subscription("al")
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        message = push.send(users=["al"], title="Hi", send_at=later)
        [waiting] = push.explain(message.id)
        assert "worker" not in waiting["detail"]
        held_until = datetime.now(timezone.utc) + timedelta(seconds=30)
        d = push.models.Delivery
        db.session.execute(  # as a worker's claim leaves it
            sa.update(d)
            .where(d.message_id == message.id)
            .values(due_at=datetime.now(timezone.utc), lease_until=held_until, attempts=1)
        )
        db.session.commit()
        [held] = push.explain(message.id)
    assert held["status"] == "queued"
    assert held["detail"] == (
        "A worker took it and is sending it now; should that worker stop, another takes "
        f"it at {outcomes.clock(held_until)}."
    )
