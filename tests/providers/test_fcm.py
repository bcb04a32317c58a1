"""FCMProvider through the real pyfcm, google-auth and requests, against FakeFCM."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import pytest

from flask_push.credentials import FCM
from flask_push.errors import PayloadError
from flask_push.message import (
    DeliveryResult,
    DeviceTarget,
    Notification,
    OutgoingPush,
    WebPushTarget,
)
from flask_push.providers import provider_class
from flask_push.providers.fcm import FCMProvider
from flask_push.testing.fcm import FakeFCM, make_registration_token

from conftest import service_account as foreign_service_account

T = TypeVar("T")

ORDER = Notification(
    title="Order #42",
    body="Out for delivery",
    url="/orders/42",
    icon="ic_truck",
    image="https://shop.example/van.png",
    badge=3,
    sound="default",
    data={"orderId": 42, "paid": True, "note": "ring twice", "items": [1, 2], "gift": None},
    ttl=3600,
    urgency="high",
    collapse_key="order-42",
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeFCM]:
    with FakeFCM() as fake:
        yield fake


@pytest.fixture(scope="module")
def account(server: FakeFCM) -> dict[str, str]:
    return server.service_account()


@pytest.fixture
def fcm(server: FakeFCM) -> FakeFCM:
    server.reset()
    server.delay = 0.0
    return server


def make_provider(
    fake: FakeFCM, account: dict[str, Any], *, timeout: float = 5.0, **settings: Any
) -> FCMProvider:
    # Through the settings check, as init_app and the /providers API do.
    checked = FCM.normalize({"credentials": account, "baseUrl": fake.base_url, **settings})
    provider = provider_class("fcm").from_settings(checked, concurrency=10, timeout=timeout)
    assert isinstance(provider, FCMProvider)
    return provider


MESSAGE_ID = "msg_01JD3X9K8Q4M2V7T5R1N6B0C9A"


def push(token: str, notification: Notification = ORDER, n: int = 0, **extra: Any) -> OutgoingPush:
    return OutgoingPush(f"dlv_{n}", MESSAGE_ID, notification, DeviceTarget(token), **extra)


def run(provider: FCMProvider, work: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await work()
        finally:
            await provider.aclose()

    return asyncio.run(main())


def send(provider: FCMProvider, pushes: Sequence[OutgoingPush]) -> list[DeliveryResult]:
    return run(provider, lambda: provider.send_batch(pushes))


def send_one(provider: FCMProvider, one: OutgoingPush) -> DeliveryResult:
    [result] = send(provider, [one])
    return result


def test_batch_arrives_mapped_with_one_token(fcm: FakeFCM, account: dict[str, str]) -> None:
    tokens = [make_registration_token() for _ in range(30)]
    pushes = [push(token, n=i) for i, token in enumerate(tokens)]
    issued_before = len(fcm.issued_tokens)
    provider = make_provider(fcm, account)

    results = send(provider, pushes)

    assert [r.delivery_id for r in results] == [p.delivery_id for p in pushes]
    assert {(r.status, r.provider, r.status_code) for r in results} == {("sent", "fcm", 200)}
    by_token = {m.token: m for m in fcm.messages}
    assert sorted(by_token) == sorted(tokens)
    for token in tokens:
        assert by_token[token].project_id == "flask-push-test"
        assert by_token[token].message == {
            "token": token,
            "notification": {
                "title": "Order #42",
                "body": "Out for delivery",
                "image": "https://shop.example/van.png",
            },
            "data": {
                "orderId": "42",
                "paid": "true",
                "note": "ring twice",
                "items": "[1,2]",
                "gift": "null",
                "url": "/orders/42",
                "messageId": MESSAGE_ID,
            },
            "android": {
                "ttl": "3600s",
                "priority": "HIGH",
                "collapse_key": "order-42",
                "notification": {
                    "icon": "ic_truck",
                    "sound": "default",
                    "tag": "order-42",
                    "notification_count": 3,
                },
            },
        }
    # One access token from the fake's /token served all 30 sends on 10 threads.
    assert len(fcm.issued_tokens) == issued_before + 1
    assert {m.access_token for m in fcm.messages} == {fcm.issued_tokens[-1].access_token}
    assert fcm.send_attempts == 30


def test_minimal_notification_and_click_token(fcm: FakeFCM, account: dict[str, str]) -> None:
    token = make_registration_token()
    plain = Notification(title="Hi", badge="/badge.png", data={"url": "/theirs"}, ttl=10**8)
    result = send_one(make_provider(fcm, account), push(token, plain, click_token="ck.1"))
    assert result.status == "sent"
    assert fcm.messages[0].message == {
        "token": token,
        "notification": {"title": "Hi"},
        # data's own "url" is kept when the notification has none
        "data": {"url": "/theirs", "messageId": MESSAGE_ID, "clickToken": "ck.1"},
        # the ttl is capped at FCM's four weeks; a str badge has no Android counterpart
        "android": {"ttl": "2419200s", "priority": "NORMAL"},
    }


def test_project_from_settings_wins_over_the_keys(fcm: FakeFCM, account: dict[str, str]) -> None:
    # pyfcm would post to the key's project_id; the configured one must be used.
    key = dict(account, project_id="not-this-one")
    provider = make_provider(fcm, key, projectId="flask-push-test")
    assert send_one(provider, push(make_registration_token())).status == "sent"
    assert fcm.messages[0].project_id == "flask-push-test"


def test_wrong_project_fails_and_keeps_the_token(fcm: FakeFCM, account: dict[str, str]) -> None:
    provider = make_provider(fcm, account, projectId="another-project")
    result = send_one(provider, push(make_registration_token()))
    assert (result.status, result.status_code) == ("failed", 403)
    assert "'another-project'" in (result.error or "")
    assert "PUSH_FCM_PROJECT_ID" in (result.error or "")


def test_unregistered_token_is_gone(fcm: FakeFCM, account: dict[str, str]) -> None:
    token = make_registration_token()
    fcm.unregister(token)
    result = send_one(make_provider(fcm, account), push(token))
    assert (result.status, result.status_code) == ("gone", 404)


def test_malformed_token_is_gone_other_invalid_argument_fails(
    fcm: FakeFCM, account: dict[str, str]
) -> None:
    other = make_registration_token()
    fcm.fail_next(400, "INVALID_ARGUMENT", token=other, message="Invalid value at 'message'")
    results = send(make_provider(fcm, account), [push("not a token"), push(other, n=1)])
    assert [(r.status, r.status_code) for r in results] == [("gone", 400), ("failed", 400)]
    assert "not a valid FCM registration token" in (results[0].error or "")
    assert "Invalid value at 'message'" in (results[1].error or "")


def test_429_is_retried_later_without_sleeping(fcm: FakeFCM, account: dict[str, str]) -> None:
    fcm.fail_next(429, "QUOTA_EXCEEDED", retry_after=30)
    provider = make_provider(fcm, account)
    started = time.monotonic()
    result = send_one(provider, push(make_registration_token()))
    # pyfcm would sleep 30 s and send again; the worker must hand it back at once.
    assert time.monotonic() - started < 3
    assert (result.status, result.status_code, result.retry_after) == ("retry", 429, 30)
    assert "QUOTA_EXCEEDED" in (result.error or "")
    assert fcm.send_attempts == 1 and fcm.messages == []


@pytest.mark.parametrize(
    ("status", "code", "retry_after"),
    [(503, "UNAVAILABLE", None), (503, "UNAVAILABLE", 7), (500, "INTERNAL", None)],
)
def test_server_errors_are_retried_with_one_attempt(
    fcm: FakeFCM, account: dict[str, str], status: int, code: str, retry_after: int | None
) -> None:
    # pyfcm's own adapter would retry 503 in urllib3 with backoff.
    fcm.fail_next(status, code, retry_after=retry_after)
    result = send_one(make_provider(fcm, account), push(make_registration_token()))
    assert (result.status, result.status_code, result.retry_after) == (
        "retry",
        status,
        retry_after,
    )
    assert fcm.send_attempts == 1


def test_expired_access_token_is_replaced_once(fcm: FakeFCM, account: dict[str, str]) -> None:
    provider = make_provider(fcm, account)
    first, second = make_registration_token(), make_registration_token()
    issued_before = len(fcm.issued_tokens)

    async def work() -> list[DeliveryResult]:
        results = await provider.send_batch([push(first)])
        fcm.expire_tokens()
        return results + await provider.send_batch([push(second, n=1)])

    assert [r.status for r in run(provider, work)] == ["sent", "sent"]
    assert len(fcm.issued_tokens) == issued_before + 2
    assert fcm.send_attempts == 3  # the refused one, then the resend


def test_refused_credentials_fail_with_advice(fcm: FakeFCM, account: dict[str, str]) -> None:
    fcm.fail_next(401, "THIRD_PARTY_AUTH_ERROR")
    result = send_one(make_provider(fcm, account), push(make_registration_token()))
    assert (result.status, result.status_code) == ("failed", 401)
    assert "PUSH_FCM_CREDENTIALS" in (result.error or "")

    # A key the token endpoint does not know: invalid_grant, not worth retrying,
    # and remembered for a while rather than asked again for every push.
    stranger = foreign_service_account(token_uri=fcm.token_uri)
    pushes = [push(make_registration_token(), n=i) for i in range(3)]
    results = send(make_provider(fcm, stranger), pushes)
    assert [r.status for r in results] == ["failed"] * 3
    for result in results:
        assert "invalid_grant" in (result.error or "")
        assert "PUSH_FCM_CREDENTIALS" in (result.error or "")
    assert fcm.send_attempts == 1  # only the scripted 401 above reached messages:send


def test_stopped_server_is_retried() -> None:
    fake = FakeFCM().start()
    account = fake.service_account()
    provider = make_provider(fake, account)
    cold = make_provider(fake, account)  # has no access token yet

    async def work() -> list[DeliveryResult]:
        results = await provider.send_batch([push(make_registration_token())])
        await asyncio.to_thread(fake.stop)
        results += await provider.send_batch([push(make_registration_token(), n=1)])
        results += await cold.send_batch([push(make_registration_token(), n=2)])
        await cold.aclose()
        return results

    sent, unreachable, no_token = run(provider, work)
    assert sent.status == "sent"
    assert unreachable.status == "retry" and "FCM unreachable" in (unreachable.error or "")
    assert no_token.status == "retry" and "token endpoint" in (no_token.error or "")


def test_slow_server_is_retried_within_the_timeout(fcm: FakeFCM, account: dict[str, str]) -> None:
    fcm.delay = 1.0
    provider = make_provider(fcm, account, timeout=0.3)
    started = time.monotonic()
    result = send_one(provider, push(make_registration_token()))
    # aclose (in send_one) waited for the worker thread: requests' timeout freed it.
    assert time.monotonic() - started < 0.9
    assert result.status == "retry"


def test_oversize_and_reserved_keys_are_refused_by_check(account: dict[str, str]) -> None:
    provider = FCMProvider(credentials=account, project_id="flask-push-test")
    provider.check(Notification(title="Sale", body="x" * 3000))
    with pytest.raises(PayloadError, match="limit is 4000"):
        provider.check(Notification(title="Sale", body="x" * 2000, data={"more": "é" * 1000}))
    with pytest.raises(PayloadError, match="'google.c.a.e'"):
        provider.check(Notification(title="Sale", data={"google.c.a.e": "1"}))


def test_payload_size_covers_what_is_sent(fcm: FakeFCM, account: dict[str, str]) -> None:
    provider = make_provider(fcm, account)
    size = provider.payload_size(ORDER)
    assert (
        send_one(provider, push(make_registration_token(), click_token="x" * 100)).status == "sent"
    )
    message = fcm.messages[0].message
    sent = json.dumps(
        {"notification": message["notification"], "data": message["data"]},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert len(sent) < size < len(sent) + 200


def test_one_result_per_push_in_order(fcm: FakeFCM, account: dict[str, str]) -> None:
    tokens = [make_registration_token() for _ in range(4)]
    fcm.unregister(tokens[1])
    fcm.fail_next(429, "QUOTA_EXCEEDED", token=tokens[3])
    web = OutgoingPush("dlv_web", "msg_1", ORDER, WebPushTarget("https://x.example/1", "k", "a"))
    pushes = [push(token, n=i) for i, token in enumerate(tokens)]
    pushes.insert(2, web)
    results = send(make_provider(fcm, account), pushes)
    assert [(r.delivery_id, r.status) for r in results] == [
        ("dlv_0", "sent"),
        ("dlv_1", "gone"),
        ("dlv_web", "failed"),
        ("dlv_2", "sent"),
        ("dlv_3", "retry"),
    ]


def test_aclose_shuts_the_pool_down(fcm: FakeFCM, account: dict[str, str]) -> None:
    provider = make_provider(fcm, account)

    def pool_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("flask-push-fcm")]

    async def work() -> tuple[int, int]:
        await provider.send_batch([push(make_registration_token(), n=i) for i in range(5)])
        during = len(pool_threads())
        await provider.aclose()
        return during, len(pool_threads())

    during, after = run(provider, work)
    assert during >= 1 and after == 0
