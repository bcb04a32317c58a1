"""How the provider contract suite drives each provider against its fake.

A driver builds its provider through the public interface (``provider_class(kind)``
and ``from_settings``), makes targets its fake knows, scripts the fake's answers
(a dead target, a rate limit, a refusal), and says what the provider's results carry
for each: the status code and a word of the error. What a driver cannot stage (the
memory provider has no service behind it) is left out of its ``stages``, and the
tests that need it are not run for it.

Adding a provider: write its driver here and add it to :data:`DRIVERS`.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

import pytest

from flask_push.credentials import APNS, FCM, WEBPUSH
from flask_push.message import (
    DeviceTarget,
    Notification,
    OutgoingPush,
    WebPushTarget,
)
from flask_push.providers import Provider, provider_class
from flask_push.providers.apns import APNsProvider
from flask_push.providers.fcm import FCMProvider
from flask_push.providers.memory import MemoryProvider
from flask_push.providers.webpush import WebPushProvider
from flask_push.pytest_plugin import APNS_TOPIC
from flask_push.testing import FakeAPNs, FakeFCM, FakePushService, FakeService
from flask_push.testing.fcm import make_registration_token

T = TypeVar("T")
Target = WebPushTarget | DeviceTarget

#: what a driver may be able to stage, each the name of a behaviour the suite tests
GONE = "a target the service says is dead"
RETRY = "a rate limit or a server error, with or without Retry-After"
REFUSAL = "a payload the service refuses as too large"
LIMIT = "a size limit that check() enforces"
OTHER_TARGET = "a target of another provider's kind"
HOLD = "a service that does not answer (held requests, counted in flight)"
UNREACHABLE = "a service that stopped"


class Exactly(str):
    """An error a result must carry word for word; a plain ``str`` need only be in it."""


def says(error: str | None, expected: str) -> bool:
    """Whether a result's ``error`` says what a driver ``expected``."""
    if error is None:
        return False
    return error == expected if isinstance(expected, Exactly) else expected in error


def push(target: Target, n: int = 0, notification: Notification | None = None) -> OutgoingPush:
    return OutgoingPush(
        f"dlv_{n}",
        f"msg_{n}",
        notification or Notification(title=f"Order #{n}", body="Out for delivery"),
        target,
    )


class Driver(ABC):
    """One provider, and the fake service it sends to (none for ``memory``)."""

    kind: ClassVar[str]
    #: how ``provider_class`` finds it: its kind, or a dotted path
    path: ClassVar[str]
    #: the class it finds
    provider_type: ClassVar[type[Provider]]
    #: what of :data:`GONE`, :data:`RETRY`... its fake can stage
    stages: ClassVar[frozenset[str]]
    #: the status code of a result for what was delivered
    sent_status: ClassVar[int | None]
    #: the status code, and the words of the error (see :func:`says`), for a dead target
    gone_status: ClassVar[int | None] = None
    gone_says: ClassVar[str] = ""
    #: the status code, and the words of the error, for a payload refused as too large
    too_large_status: ClassVar[int | None] = None
    too_large_says: ClassVar[str] = ""
    #: the words of the error when the service cannot be reached
    unreachable_says: ClassVar[str] = ""
    #: the words of the error for a target of another kind
    other_target_says: ClassVar[str] = ""
    #: whether the service sends a Retry-After for the provider to pass on
    retry_after: ClassVar[bool] = False

    fake: FakeService[Any] | None = None

    @classmethod
    @abstractmethod
    def make(cls, request: pytest.FixtureRequest) -> Driver:
        """A driver with its fake, from the plugin's fixtures."""

    @abstractmethod
    def provider(self, **options: Any) -> Provider:
        """The provider, built from settings, aimed at the fake; ``options`` go to it."""

    @abstractmethod
    def target(self) -> Target:
        """A fresh target the fake delivers to."""

    @abstractmethod
    def delivered(self) -> int:
        """How many pushes the service accepted."""

    def attempts(self) -> int:
        """How many sends reached the service, accepted or not."""
        raise NotImplementedError

    def touched(self) -> int:
        """How many connections and requests of any kind the service saw."""
        return self.attempts()

    def other_target(self) -> Target:
        """A target of another kind, which this provider cannot deliver to."""
        raise NotImplementedError

    def kill(self, target: Target) -> None:
        """Make the service answer that ``target`` is dead from now on."""
        raise NotImplementedError

    def fail_next(
        self, status: int, *, retry_after: int | None = None, target: Target | None = None
    ) -> None:
        """Make the service answer the next send (to ``target``) with a 429 or 5xx."""
        raise NotImplementedError

    def retry_says(self, status: int) -> str:
        """The words of the error of a result for a scripted ``status``."""
        raise NotImplementedError

    def refuse_too_large(self) -> None:
        """Make the service refuse the next send as too large."""
        raise NotImplementedError


class WebPushDriver(Driver):
    kind = path = "webpush"
    provider_type = WebPushProvider
    stages = frozenset({GONE, RETRY, REFUSAL, LIMIT, OTHER_TARGET, HOLD, UNREACHABLE})
    sent_status = 201
    gone_status, gone_says = 410, "expired"
    too_large_status, too_large_says = 413, "too large"
    unreachable_says = "Connection refused"
    other_target_says = "DeviceTarget"
    retry_after = True

    def __init__(self, fake: FakePushService, vapid_private_key: str) -> None:
        self.fake = self.service = fake
        self.key = vapid_private_key

    @classmethod
    def make(cls, request: pytest.FixtureRequest) -> Driver:
        return cls(
            request.getfixturevalue("push_fake_webpush"),
            request.getfixturevalue("vapid_private_key"),
        )

    def provider(self, **options: Any) -> Provider:
        settings = WEBPUSH.normalize({"privateKey": self.key, "subject": "mailto:ops@example.com"})
        local = {"allow_http": True, "allow_private_hosts": ["127.0.0.1"], "timeout": 5.0}
        return provider_class(self.path).from_settings(settings, **(local | options))

    def target(self) -> Target:
        subscriber = self.service.subscribe()
        return WebPushTarget(subscriber.endpoint, subscriber.p256dh, subscriber.auth)

    def delivered(self) -> int:
        return len(self.service.pushes)

    def attempts(self) -> int:
        return len(self.service.requests)

    def other_target(self) -> Target:
        return DeviceTarget(secrets.token_hex(32))

    def _subscriber_id(self, target: Target) -> str:
        assert isinstance(target, WebPushTarget)
        return target.endpoint.rpartition("/")[2]

    def kill(self, target: Target) -> None:
        [subscriber] = [s for s in self.service.subscribers if s.id == self._subscriber_id(target)]
        subscriber.expire()

    def fail_next(
        self, status: int, *, retry_after: int | None = None, target: Target | None = None
    ) -> None:
        subscriber = None if target is None else self._subscriber_id(target)
        self.service.fail_next(status, subscriber=subscriber, retry_after=retry_after)

    def retry_says(self, status: int) -> str:
        return "scripted"  # the service's own words, passed on

    def refuse_too_large(self) -> None:
        self.service.fail_next(413)


class DeviceDriver(Driver):
    """A provider that sends to device tokens, to a fake that can unregister them."""

    stages = frozenset({GONE, RETRY, REFUSAL, LIMIT, OTHER_TARGET, HOLD, UNREACHABLE})
    sent_status = 200
    other_target_says = "WebPushTarget"
    #: the service's error code or reason for each scripted status
    REASONS: ClassVar[dict[int, str]]

    fake: FakeFCM | FakeAPNs

    @classmethod
    def make(cls, request: pytest.FixtureRequest) -> Driver:
        return cls(request.getfixturevalue(f"push_fake_{cls.kind}"))

    def other_target(self) -> Target:
        return WebPushTarget("https://push.example.com/send/1", "k", "a")

    def kill(self, target: Target) -> None:
        assert isinstance(target, DeviceTarget)
        self.fake.unregister(target.token)

    def fail_next(
        self, status: int, *, retry_after: int | None = None, target: Target | None = None
    ) -> None:
        token = target.token if isinstance(target, DeviceTarget) else None
        self._fail_next(status, self.REASONS[status], token, retry_after)

    @abstractmethod
    def _fail_next(
        self, status: int, reason: str, token: str | None, retry_after: int | None
    ) -> None:
        """The fake's own ``fail_next``."""

    def retry_says(self, status: int) -> str:
        return self.REASONS[status]


class FCMDriver(DeviceDriver):
    kind = path = "fcm"
    provider_type = FCMProvider
    gone_status, gone_says = 404, "unregistered"
    too_large_status, too_large_says = 400, "too big"
    unreachable_says = "Connection refused"
    other_target_says = "device tokens only"
    retry_after = True
    # 502 and 504: a proxy or load balancer on the way, in Google's error shape
    REASONS = {
        429: "QUOTA_EXCEEDED",
        500: "INTERNAL",
        502: "UNAVAILABLE",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }

    def __init__(self, fake: FakeFCM) -> None:
        self.fake = self.fcm = fake
        self.account = fake.service_account()

    def provider(self, **options: Any) -> Provider:
        settings = FCM.normalize({"credentials": self.account, "baseUrl": self.fcm.base_url})
        return provider_class(self.path).from_settings(settings, **({"timeout": 5.0} | options))

    def target(self) -> Target:
        return DeviceTarget(make_registration_token())

    def delivered(self) -> int:
        return len(self.fcm.messages)

    def attempts(self) -> int:
        return self.fcm.send_attempts

    def touched(self) -> int:
        return self.attempts() + len(self.fcm.issued_tokens)

    def _fail_next(
        self, status: int, reason: str, token: str | None, retry_after: int | None
    ) -> None:
        self.fcm.fail_next(status, reason, token=token, retry_after=retry_after)

    def refuse_too_large(self) -> None:
        self.fcm.fail_next(400, "INVALID_ARGUMENT", message="Message is too big")


class APNsDriver(DeviceDriver):
    kind = path = "apns"
    provider_type = APNsProvider
    gone_status, gone_says = 410, "Unregistered"
    too_large_status = 413
    too_large_says = Exactly("413 PayloadTooLarge: APNs refused the payload as too large")
    unreachable_says = "Connection refused"
    # 502 and 504: not Apple's own answers, but a proxy's or load balancer's on the way
    REASONS = {
        429: "TooManyRequests",
        500: "InternalServerError",
        502: "BadGateway",
        503: "ServiceUnavailable",
        504: "GatewayTimeout",
    }

    def __init__(self, fake: FakeAPNs) -> None:
        self.fake = self.apns = fake
        self.key = fake.auth_key()

    def provider(self, **options: Any) -> Provider:
        # The plugin's fixture has this process trust the fake, as an app would.
        key_pem, key_id, team_id = self.key
        settings = APNS.normalize(
            {
                "key": key_pem,
                "keyId": key_id,
                "teamId": team_id,
                "topic": APNS_TOPIC,
                "baseUrl": f"https://localhost:{self.apns.port}",
            }
        )
        return provider_class(self.path).from_settings(settings, **({"timeout": 5.0} | options))

    def target(self) -> Target:
        return DeviceTarget(secrets.token_hex(32))

    def delivered(self) -> int:
        return len(self.apns.notifications)

    def attempts(self) -> int:
        return len(self.apns.notifications) + len(self.apns.rejections)

    def touched(self) -> int:
        return self.attempts() + self.apns.connection_count

    def _fail_next(
        self, status: int, reason: str, token: str | None, retry_after: int | None
    ) -> None:
        self.apns.fail_next(status, reason, token=token)  # APNs sends no Retry-After

    def retry_says(self, status: int) -> str:
        return Exactly(f"{status} {self.REASONS[status]}")

    def refuse_too_large(self) -> None:
        self.apns.fail_next(413, "PayloadTooLarge")


class MemoryDriver(Driver):
    """The provider that records instead of sending: nothing to script behind it."""

    kind = "memory"
    path = f"{MemoryProvider.__module__}:{MemoryProvider.__name__}"
    provider_type = MemoryProvider
    stages = frozenset()
    sent_status = None

    def __init__(self) -> None:
        self.providers: list[MemoryProvider] = []

    @classmethod
    def make(cls, request: pytest.FixtureRequest) -> Driver:
        return cls()

    def provider(self, **options: Any) -> Provider:
        provider = provider_class(self.path).from_settings({}, **options)
        assert isinstance(provider, MemoryProvider)
        self.providers.append(provider)
        return provider

    def target(self) -> Target:
        return DeviceTarget(secrets.token_hex(32))

    def delivered(self) -> int:
        return sum(len(provider.sent) for provider in self.providers)


#: every provider the suite runs for: the registered kinds, and memory
DRIVERS: dict[str, type[Driver]] = {
    driver.kind: driver for driver in (WebPushDriver, FCMDriver, APNsDriver, MemoryDriver)
}


def for_providers(*needs: str) -> pytest.MarkDecorator:
    """Run a test once per provider whose driver can stage all it ``needs``."""
    kinds = [kind for kind, driver in DRIVERS.items() if set(needs) <= driver.stages]
    return pytest.mark.parametrize("driver", kinds, indirect=True)
