"""What every fake does alike (flask_push.testing.service): run for each of the three.

Each fake is driven by a real client of its protocol (pywebpush, plain HTTP with a
token from google-auth, aioapns); what only one protocol does is tested in its own
``test_fake_*`` module.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pytest
import requests
from aioapns import NotificationRequest
from google.auth.transport.requests import Request
from google.oauth2 import service_account
from pywebpush import WebPushException, webpush

from flask_push.testing import FakeAPNs, FakeFCM, FakePushService, FakeService
from flask_push.testing.fcm import FCM_SCOPE, make_registration_token

from aioapns_client import client as aioapns_client
from aioapns_client import close


class Client(ABC):
    """A real client of one fake, that sends one request at a time and says the status."""

    #: the status of an accepted push
    ok: ClassVar[int] = 200

    def __init__(self, fake: FakeService[Any]) -> None:
        self.fake = fake

    @abstractmethod
    def target(self) -> str:
        """A fresh target the fake delivers to (a subscriber id, a device token)."""

    @abstractmethod
    def send(self, target: str) -> int:
        """Send one push; the status answered, or 0 when the connection was lost."""

    @abstractmethod
    def fail_next(self, status: int, *, target: str | None = None, times: int = 1) -> None:
        """The fake's own ``fail_next``, with what its protocol needs beside the status."""


class WebPushClient(Client):
    ok = 201

    def __init__(self, fake: FakePushService, vapid_private_key: str) -> None:
        super().__init__(fake)
        self.service = fake
        self.key = vapid_private_key
        self.subscribers: dict[str, Any] = {}

    def target(self) -> str:
        subscriber = self.service.subscribe()
        self.subscribers[subscriber.id] = subscriber
        return subscriber.id

    def send(self, target: str) -> int:
        try:
            response = webpush(
                self.subscribers[target].info,
                data=json.dumps({"title": "Hi"}),
                vapid_private_key=self.key,
                vapid_claims={"sub": "mailto:ops@shop.example"},
                ttl=60,
                timeout=10,
            )
        except WebPushException as error:
            return error.response.status_code if error.response is not None else 0
        except requests.ConnectionError:
            return 0
        assert isinstance(response, requests.Response)
        return response.status_code

    def fail_next(self, status: int, *, target: str | None = None, times: int = 1) -> None:
        self.service.fail_next(status, subscriber=target, times=times)


class FCMClient(Client):
    CODES: ClassVar[dict[int, str]] = {429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE"}

    def __init__(self, fake: FakeFCM) -> None:
        super().__init__(fake)
        self.fcm = fake
        info = fake.service_account()
        credentials = service_account.Credentials.from_service_account_info(
            info, scopes=[FCM_SCOPE]
        )
        credentials.refresh(Request())
        self.token = str(credentials.token)

    def target(self) -> str:
        return make_registration_token()

    def send(self, target: str) -> int:
        try:
            response = requests.post(
                f"{self.fcm.endpoint_base}/flask-push-test/messages:send",
                json={"message": {"token": target, "notification": {"title": "Hi"}}},
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=10,
            )
        except requests.ConnectionError:
            return 0
        return response.status_code

    def fail_next(self, status: int, *, target: str | None = None, times: int = 1) -> None:
        code = self.CODES.get(status, "INTERNAL")
        self.fcm.fail_next(status, code, token=target, times=times)


class APNsClient(Client):
    REASONS: ClassVar[dict[int, str]] = {
        429: "TooManyRequests",
        500: "InternalServerError",
        503: "ServiceUnavailable",
    }

    def __init__(self, fake: FakeAPNs) -> None:
        super().__init__(fake)
        self.apns = fake
        self.key = fake.auth_key()

    def target(self) -> str:
        return secrets.token_hex(32)

    def send(self, target: str) -> int:
        async def main() -> int:
            apns = aioapns_client(self.apns, self.key, max_connection_attempts=1)
            try:
                request = NotificationRequest(target, {"aps": {"alert": "Hi"}})
                result = await asyncio.wait_for(apns.send_notification(request), 10)
            except Exception:  # noqa: BLE001 - aioapns' own, or a lost connection
                return 0
            finally:
                await close(apns)
            return int(result.status)

        return asyncio.run(main())

    def fail_next(self, status: int, *, target: str | None = None, times: int = 1) -> None:
        reason = self.REASONS.get(status, "InternalServerError")
        self.apns.fail_next(status, reason, token=target, times=times)


@pytest.fixture(params=["webpush", "fcm", "apns"])
def client(request: pytest.FixtureRequest) -> Client:
    if request.param == "webpush":
        return WebPushClient(
            request.getfixturevalue("push_fake_webpush"),
            request.getfixturevalue("vapid_private_key"),
        )
    if request.param == "fcm":
        return FCMClient(request.getfixturevalue("push_fake_fcm"))
    return APNsClient(request.getfixturevalue("push_fake_apns"))


def in_threads(client: Client, targets: list[str]) -> list[int]:
    """Send to each target from a thread of its own, all at once; the statuses, in order."""
    statuses = [-1] * len(targets)

    def one(index: int) -> None:
        statuses[index] = client.send(targets[index])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


# -- lifecycle ---------------------------------------------------------------------------


def test_a_started_fake_serves_until_stopped_and_keeps_what_it_got(client: Client) -> None:
    fake = client.fake
    assert fake.running and fake.port > 0
    assert client.send(client.target()) == client.ok
    fake.stop()
    assert not fake.running
    assert len(fake.wait(1)) == 1  # kept after stop
    fake.stop()  # stopping twice is harmless


def test_a_fake_starts_once_unless_it_may_restart() -> None:
    for fake in (FakePushService(), FakeFCM(), FakeAPNs("com.example.app")):
        with pytest.raises(RuntimeError, match="start"):
            fake.port  # noqa: B018
        with fake:
            port = fake.port
            with pytest.raises(RuntimeError):
                fake.start()
        if fake.restartable:  # APNs: what it issued does not name its port
            with pytest.raises(RuntimeError):
                fake.port  # noqa: B018
            with fake:
                assert fake.running
        else:  # its subscriptions or service accounts name the port: kept, served once
            assert fake.port == port
            with pytest.raises(RuntimeError, match="only once"):
                fake.start()


# -- what arrived ------------------------------------------------------------------------


def test_wait_returns_what_was_accepted_and_says_what_is_missing(client: Client) -> None:
    with pytest.raises(TimeoutError, match=f"received 0 of 1 {client.fake.noun} within 0.05 s"):
        client.fake.wait(1, timeout=0.05)
    target = client.target()
    sender = threading.Thread(target=client.send, args=(target,))
    sender.start()
    assert len(client.fake.wait(1)) == 1
    sender.join()


def test_reset_forgets_what_arrived_and_the_failures_still_due(client: Client) -> None:
    target = client.target()
    assert client.send(target) == client.ok
    client.fail_next(500)
    client.fake.reset()
    assert client.fake.wait(0) == []
    assert client.send(target) == client.ok  # the failure went with the reset


# -- scripted failures -------------------------------------------------------------------


def test_scripted_failures_are_used_in_order_per_target_and_counted(client: Client) -> None:
    one, other = client.target(), client.target()
    client.fail_next(429)
    client.fail_next(503, target=other, times=2)
    statuses = [client.send(target) for target in (one, one, other, other, other)]
    assert statuses == [429, client.ok, 503, 503, client.ok]
    assert len(client.fake.wait(2)) == 2


def test_a_failure_to_script_is_checked(client: Client) -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        client.fail_next(200)
    with pytest.raises(ValueError, match="times"):
        client.fail_next(500, times=0)


# -- slowness ----------------------------------------------------------------------------


def test_delay_is_waited_before_each_answer(client: Client) -> None:
    client.fake.delay = 0.2
    started = time.monotonic()
    assert client.send(client.target()) == client.ok
    # a lower bound, which a busy machine can only make longer: not a speed check
    assert time.monotonic() - started >= 0.2


def test_requests_are_served_side_by_side(client: Client) -> None:
    # Held, all five are in flight at once: the fake never serves them one by one.
    client.fake.hold()
    targets = [client.target() for _ in range(5)]
    sending = threading.Thread(target=lambda: statuses.extend(in_threads(client, targets)))
    statuses: list[int] = []
    sending.start()
    try:
        assert client.fake.wait_in_flight(5) == 5
        assert client.fake.wait(0) == []  # none answered yet
    finally:
        client.fake.release()
    sending.join()
    assert statuses == [client.ok] * 5
    assert (client.fake.in_flight, client.fake.peak_in_flight) == (0, 5)


def test_release_answers_as_many_held_requests_as_it_is_told(client: Client) -> None:
    client.fake.hold()
    targets = [client.target() for _ in range(3)]
    statuses: list[int] = []
    sending = threading.Thread(target=lambda: statuses.extend(in_threads(client, targets)))
    sending.start()
    try:
        client.fake.wait_in_flight(3)
        client.fake.release(2)
        assert len(client.fake.wait(2)) == 2
        assert client.fake.wait_in_flight(1) == 1  # the third is still held
    finally:
        client.fake.release()
    sending.join()
    assert statuses == [client.ok] * 3


def test_stop_hangs_up_on_held_requests(client: Client) -> None:
    client.fake.hold()
    statuses: list[int] = []
    sending = threading.Thread(target=lambda: statuses.append(client.send(client.target())))
    sending.start()
    client.fake.wait_in_flight(1)
    client.fake.stop()
    sending.join()
    assert statuses == [0] and client.fake.wait(0) == []
    assert client.fake.in_flight == 0
