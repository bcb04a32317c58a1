"""The local Web Push service, driven through the real client, pywebpush.

What every fake does alike (its lifecycle, waiting, scripting, delay and hold) is
tested once for all three in test_fake_service.py.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from pathlib import Path
from typing import Any

import http_ece
import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid, Vapid01
from pywebpush import WebPushException, webpush

from flask_push.pytest_plugin import PushFakes
from flask_push.testing.webpush import (
    MAX_BODY_SIZE,
    FakePushService,
    FakeSubscriber,
    ReceivedPush,
)

from conftest import b64url

# A payload as flask-push sends it (CONTRACT.md section 4).
MESSAGE = {
    "title": "Order shipped",
    "body": "Order 42 is on its way",
    "url": "/orders/42",
    "messageId": "msg_0001",
}
HEADERS = {"Urgency": "high", "Topic": "order-42", "Content-Type": "application/octet-stream"}


@pytest.fixture
def subscriber(push_fake_webpush: FakePushService) -> FakeSubscriber:
    return push_fake_webpush.subscribe("alice's laptop")


@pytest.fixture(scope="session")
def vapid(vapid_private_key: str) -> Vapid:
    return Vapid.from_string(private_key=vapid_private_key)


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    return b64url(
        key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )


def send(
    subscriber: FakeSubscriber,
    private_key: str | Vapid,
    data: str | None = json.dumps(MESSAGE),
    **options: Any,
) -> requests.Response:
    """Send with pywebpush as an application server would."""
    options.setdefault("vapid_claims", {"sub": "mailto:ops@shop.example"})
    options.setdefault("ttl", 3600)
    options.setdefault("headers", dict(HEADERS))
    options.setdefault("timeout", 10)
    response = webpush(
        subscription_info=subscriber.info, data=data, vapid_private_key=private_key, **options
    )
    assert isinstance(response, requests.Response)
    return response


def send_fails(subscriber: FakeSubscriber, private_key: str | Vapid, **options: Any) -> Any:
    """Send with pywebpush, expecting it to raise; return the push service's response."""
    with pytest.raises(WebPushException) as caught:
        send(subscriber, private_key, **options)
    assert caught.value.response is not None
    return caught.value.response


def encrypt(subscriber: FakeSubscriber, data: bytes) -> bytes:
    """aes128gcm for the subscriber's keys, as a sender does (RFC 8291)."""
    return bytes(
        http_ece.encrypt(
            data,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=subscriber.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            ),
            auth_secret=subscriber.auth_secret,
            version="aes128gcm",
        )
    )


def vapid_header(
    key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], announced: str | None = None
) -> str:
    """``vapid t=<JWT>, k=<key>``, signed by ``key``, announcing ``announced`` (or key's)."""
    token = jwt.encode(claims, key, algorithm="ES256")
    return f"vapid t={token}, k={announced or public_key_b64(key)}"


def post(subscriber: FakeSubscriber, headers: dict[str, str], data: bytes = b"{}") -> Any:
    """A hand-made push, for what pywebpush will not send."""
    return requests.post(
        subscriber.endpoint, data=encrypt(subscriber, data), headers=headers, timeout=10
    )


def good_claims(service: FakePushService, **changes: Any) -> dict[str, Any]:
    claims = {"aud": service.origin, "exp": int(time.time()) + 3600, "sub": "mailto:a@b.example"}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


# -- deliveries ------------------------------------------------------------------------


def test_pywebpush_push_is_decrypted_and_recorded(
    push_fake_webpush: FakePushService,
    subscriber: FakeSubscriber,
    vapid: Vapid,
    vapid_private_key: str,
) -> None:
    claims: dict[str, str | int] = {"sub": "mailto:ops@shop.example"}
    response = send(subscriber, vapid_private_key, vapid_claims=claims, ttl=600)

    assert response.status_code == 201
    assert response.headers["Location"].startswith(f"{push_fake_webpush.origin}/message/")
    assert response.headers["TTL"] == "600"
    [push] = subscriber.received
    assert push_fake_webpush.pushes == [push]
    assert push.json() == MESSAGE and push.text == json.dumps(MESSAGE)
    assert response.headers["Location"].endswith(push.message_id)
    assert (push.ttl, push.urgency, push.topic) == (600, "high", "order-42")
    assert push.content_type == "application/octet-stream"
    assert (push.subscriber_id, push.subscriber_name) == (subscriber.id, "alice's laptop")
    assert push.vapid.sub == "mailto:ops@shop.example"
    assert (
        push.vapid.aud == push_fake_webpush.origin == f"http://127.0.0.1:{push_fake_webpush.port}"
    )
    # pywebpush wrote aud and exp (12 hours) into the dict it was given
    assert claims["aud"] == push_fake_webpush.origin and push.vapid.exp == claims["exp"]
    assert push.vapid.public_key == public_key_b64(vapid.private_key)
    assert push.vapid.scheme == "vapid"
    assert abs(push.received_at - time.time()) < 5
    [request] = push_fake_webpush.requests
    assert request.accepted and request.push == push and request.status == 201
    assert request.header("urgency") == "high" and request.header("TTL") == "600"


def test_subscription_info_is_what_a_browser_gives(subscriber: FakeSubscriber) -> None:
    info = subscriber.info
    assert info["endpoint"] == subscriber.endpoint
    assert info["endpoint"] == f"{subscriber.service.origin}/push/{subscriber.id}"
    assert info["expirationTime"] is None
    assert set(info["keys"]) == {"p256dh", "auth"}
    assert "=" not in info["keys"]["p256dh"] + info["keys"]["auth"]
    assert len(info["keys"]["p256dh"]) == 87 and len(info["keys"]["auth"]) == 22


def test_https_with_the_local_certificate(
    push_fakes: PushFakes, vapid_private_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    https = push_fakes.webpush(tls=True)
    with requests.Session() as session:
        assert https.certificate is not None
        cert_file = https.certificate.cert_file
        subscriber = https.subscribe()
        assert subscriber.endpoint.startswith(f"https://127.0.0.1:{https.port}/push/")

        # requests prefers REQUESTS_CA_BUNDLE from the environment to session.verify,
        # unless the session ignores the environment.
        session.trust_env = False
        session.verify = cert_file
        send(subscriber, vapid_private_key, requests_session=session)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert_file)
        send(subscriber, vapid_private_key)

        assert [push.json() for push in subscriber.received] == [MESSAGE, MESSAGE]
        assert subscriber.received[0].vapid.aud == https.origin
        # A client that does not trust the certificate cannot connect at all.
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        with pytest.raises(requests.exceptions.SSLError):
            send(subscriber, vapid_private_key)
        assert len(https.requests) == 2


def test_legacy_webpush_authorization_is_accepted(
    subscriber: FakeSubscriber, vapid_private_key: str
) -> None:
    send(subscriber, Vapid01.from_string(private_key=vapid_private_key))

    [push] = subscriber.received
    assert push.vapid.scheme == "webpush" and push.json() == MESSAGE


def test_push_without_payload(subscriber: FakeSubscriber, vapid_private_key: str) -> None:
    send(subscriber, vapid_private_key, data=None, headers={})

    [push] = subscriber.received
    assert push.payload == b"" and push.urgency is None and push.topic is None


def test_largest_payload_is_accepted_and_one_byte_more_is_413(
    subscriber: FakeSubscriber, vapid_private_key: str
) -> None:
    # aes128gcm adds an 86-byte header, a padding delimiter and a 16-byte tag
    largest = MAX_BODY_SIZE - 86 - 1 - 16
    send(subscriber, vapid_private_key, data="x" * largest)
    assert len(subscriber.received[0].payload) == largest

    response = send_fails(subscriber, vapid_private_key, data="x" * (largest + 1))
    assert response.status_code == 413 and "4096" in response.text
    assert len(subscriber.received) == 1


def test_wait_for_pushes_sent_from_other_threads(
    push_fake_webpush: FakePushService, subscriber: FakeSubscriber, vapid_private_key: str
) -> None:
    threads = [
        threading.Thread(target=send, args=(subscriber, vapid_private_key)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    received = subscriber.wait(3, timeout=5)
    assert len(received) == 3 and push_fake_webpush.wait(3) == received
    for thread in threads:
        thread.join()
    with pytest.raises(TimeoutError, match="received 3 of 4 pushes"):
        subscriber.wait(4, timeout=0.05)


# -- rejections --------------------------------------------------------------------------


def test_missing_authorization_is_401(
    push_fake_webpush: FakePushService, subscriber: FakeSubscriber, vapid_private_key: str
) -> None:
    response = send_fails(subscriber, vapid_private_key, vapid_claims=None)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "vapid"
    assert "Authorization" in response.text
    assert subscriber.received == []
    [request] = push_fake_webpush.rejected
    assert request.status == 401 and request.reason == response.text.strip()
    assert request.subscriber_id == subscriber.id and request.push is None


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer abc",
        "vapid k=BAAA",
        "vapid t=not-a-jwt, k=BAAA",
        "WebPush {token}",  # the legacy form needs Crypto-Key: p256ecdsa=
    ],
)
def test_malformed_authorization_is_401(subscriber: FakeSubscriber, authorization: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(good_claims(subscriber.service), key, algorithm="ES256")
    response = post(
        subscriber,
        {
            "TTL": "60",
            "Content-Encoding": "aes128gcm",
            "Authorization": authorization.format(token=token),
        },
    )
    assert response.status_code == 401, response.text


def test_token_signed_by_another_key_than_k_is_403(
    push_fake_webpush: FakePushService, subscriber: FakeSubscriber, vapid: Vapid
) -> None:
    impostor = ec.generate_private_key(ec.SECP256R1())
    forged = vapid_header(
        impostor, good_claims(push_fake_webpush), public_key_b64(vapid.private_key)
    )
    headers = {"TTL": "60", "Content-Encoding": "aes128gcm"}

    response = post(subscriber, {**headers, "Authorization": forged})
    assert response.status_code == 403 and "signature" in response.text

    response = post(
        subscriber,
        {**headers, "Authorization": vapid_header(impostor, good_claims(push_fake_webpush))},
    )
    assert response.status_code == 201
    assert subscriber.received[0].vapid.public_key == public_key_b64(impostor)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"exp": int(time.time()) + 25 * 3600}, "24 hours"),
        ({"exp": None}, "'exp'"),
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"sub": "ops@shop.example"}, "mailto:"),
        ({"sub": None}, "'sub'"),
        ({"aud": "https://fcm.googleapis.com"}, "aud"),
        ({"aud": None}, "'aud'"),
    ],
    ids=["exp-too-far", "no-exp", "exp-past", "sub-not-uri", "no-sub", "aud-other", "no-aud"],
)
def test_bad_vapid_claims_are_403(
    push_fake_webpush: FakePushService,
    subscriber: FakeSubscriber,
    changes: dict[str, Any],
    why: str,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    authorization = vapid_header(key, good_claims(push_fake_webpush, **changes))

    response = post(
        subscriber, {"TTL": "60", "Content-Encoding": "aes128gcm", "Authorization": authorization}
    )

    assert response.status_code == 403 and why in response.text, response.text
    assert push_fake_webpush.pushes == []


def test_aud_set_by_the_sender_must_be_the_service_origin(
    subscriber: FakeSubscriber, vapid_private_key: str
) -> None:
    claims = {"sub": "mailto:ops@shop.example", "aud": "https://updates.push.services.mozilla.com"}
    response = send_fails(subscriber, vapid_private_key, vapid_claims=claims)
    assert response.status_code == 403 and subscriber.service.origin in response.text


@pytest.mark.parametrize("ttl", [None, "-1", "soon", "1.5"])
def test_ttl_must_be_a_non_negative_integer(
    subscriber: FakeSubscriber, vapid: Vapid, ttl: str | None
) -> None:
    headers = {"Content-Encoding": "aes128gcm", **vapid.sign(good_claims(subscriber.service))}
    if ttl is not None:
        headers["TTL"] = ttl
    response = post(subscriber, headers)
    assert response.status_code == 400 and "TTL" in response.text


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Urgency", "urgent"),
        ("Urgency", "HIGH"),
        ("Topic", "t" * 33),
        ("Topic", "order 42"),
        ("Topic", "order/42"),
    ],
)
def test_bad_urgency_or_topic_is_400(
    subscriber: FakeSubscriber, vapid_private_key: str, header: str, value: str
) -> None:
    response = send_fails(subscriber, vapid_private_key, headers={**HEADERS, header: value})
    assert response.status_code == 400 and header in response.text


def test_every_urgency_and_a_32_character_topic_are_accepted(
    subscriber: FakeSubscriber, vapid_private_key: str
) -> None:
    for urgency in ("very-low", "low", "normal", "high"):
        send(subscriber, vapid_private_key, headers={"Urgency": urgency, "Topic": "T_-9" * 8})
    assert [push.urgency for push in subscriber.received] == ["very-low", "low", "normal", "high"]


def test_aesgcm_is_400(subscriber: FakeSubscriber, vapid_private_key: str) -> None:
    response = send_fails(subscriber, vapid_private_key, content_encoding="aesgcm")
    assert response.status_code == 400 and "aes128gcm" in response.text


def test_body_for_other_keys_is_400(
    push_fake_webpush: FakePushService, subscriber: FakeSubscriber, vapid: Vapid
) -> None:
    stranger = push_fake_webpush.subscribe("someone else")
    response = requests.post(
        subscriber.endpoint,
        data=encrypt(stranger, b'{"title": "Hi"}'),
        headers={
            "TTL": "60",
            "Content-Encoding": "aes128gcm",
            **vapid.sign(good_claims(push_fake_webpush)),
        },
        timeout=10,
    )
    assert response.status_code == 400 and "decrypt" in response.text
    assert push_fake_webpush.pushes == []


def test_expired_subscriber_is_410(subscriber: FakeSubscriber, vapid_private_key: str) -> None:
    send(subscriber, vapid_private_key)
    subscriber.expire()
    assert subscriber.expired

    response = send_fails(subscriber, vapid_private_key)

    assert response.status_code == 410 and response.text
    assert len(subscriber.received) == 1


def test_unknown_subscriber_is_404(
    push_fake_webpush: FakePushService, subscriber: FakeSubscriber, vapid_private_key: str
) -> None:
    unknown = push_fake_webpush.subscribe()
    push_fake_webpush._subscribers.pop(unknown.id)  # as if made by another service instance

    response = send_fails(unknown, vapid_private_key)

    assert response.status_code == 404
    [request] = push_fake_webpush.rejected
    assert request.subscriber_id == unknown.id and request.status == 404


def test_other_paths_and_methods(
    push_fake_webpush: FakePushService, subscriber: FakeSubscriber
) -> None:
    assert requests.post(f"{push_fake_webpush.origin}/nothing", timeout=10).status_code == 404
    response = requests.get(subscriber.endpoint, timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert [request.status for request in push_fake_webpush.requests] == [404, 405]


# -- scripted failures ---------------------------------------------------------------------


def test_scripted_429_carries_retry_after(
    push_fake_webpush: FakePushService, subscriber: FakeSubscriber, vapid_private_key: str
) -> None:
    push_fake_webpush.fail_next(429, retry_after=30)

    with pytest.raises(WebPushException) as caught:
        send(subscriber, vapid_private_key)

    assert caught.value.status_code == 429 and caught.value.retry_after == "30"
    assert subscriber.received == []
    send(subscriber, vapid_private_key)  # one failure was scripted, the retry goes through
    assert len(subscriber.received) == 1
    assert [request.status for request in push_fake_webpush.requests] == [429, 201]


def test_scripted_failures_for_one_subscriber_several_times(
    push_fake_webpush: FakePushService, subscriber: FakeSubscriber, vapid_private_key: str
) -> None:
    other = push_fake_webpush.subscribe("bob's phone")
    push_fake_webpush.fail_next(503, subscriber=subscriber, times=2)
    push_fake_webpush.fail_next(500, subscriber=subscriber.id)

    send(other, vapid_private_key)
    failures = [send_fails(subscriber, vapid_private_key) for _ in range(3)]
    send(subscriber, vapid_private_key)

    assert [response.status_code for response in failures] == [503, 503, 500]
    assert "Retry-After" not in failures[0].headers and "fail_next" in failures[0].text
    assert [push.subscriber_name for push in push_fake_webpush.pushes] == [
        "bob's phone",
        "alice's laptop",
    ]


def test_reset_forgets_everything_but_subscribers(
    push_fake_webpush: FakePushService, subscriber: FakeSubscriber, vapid_private_key: str
) -> None:
    send(subscriber, vapid_private_key)
    push_fake_webpush.fail_next(500)
    push_fake_webpush.reset()

    assert (
        push_fake_webpush.pushes == []
        and push_fake_webpush.requests == []
        and subscriber.received == []
    )
    send(subscriber, vapid_private_key)
    assert len(subscriber.received) == 1 and subscriber in push_fake_webpush.subscribers


def test_subscribing_needs_a_started_service() -> None:
    # Endpoints name its port. (Starting, stopping and fail_next's checks are
    # every fake's: in test_fake_service.py.)
    with pytest.raises(RuntimeError, match="start"):
        FakePushService().subscribe()


def test_received_push_is_immutable(subscriber: FakeSubscriber, vapid_private_key: str) -> None:
    send(subscriber, vapid_private_key)
    push = subscriber.received[0]
    assert isinstance(push, ReceivedPush)
    with pytest.raises(AttributeError):
        push.ttl = 0  # type: ignore[misc]
    assert hash(push) == hash(subscriber.received[0])


def test_its_certificate_folder_lives_as_long_as_the_fake() -> None:
    fake = FakePushService(tls=True).start()
    folder = Path(fake.certificate.trust_bundle()).parent
    fake.stop()
    assert folder.is_dir()  # what it issued stays readable, its certificate too
    del fake
    gc.collect()
    assert not folder.exists()
