"""pytest fixtures for an app's own tests: flask-push's local push services.

Registered through the ``pytest11`` entry point, so any test session where
flask-push is installed has them, with no fixture code to write:

- ``push_fake_webpush``: a started :class:`~flask_push.testing.FakePushService`;
- ``push_fake_fcm``: a started :class:`~flask_push.testing.FakeFCM`;
- ``push_fake_apns``: a started :class:`~flask_push.testing.FakeAPNs` for the topic
  ``com.example.app``, trusted by this process for the test's duration.

Each fake's ``app_config()`` gives the ``PUSH_*`` keys that aim an app at it;
pass them to the app factory, before ``init_app``. The fakes need the ``testing``
extra (``pip install 'flask-push[testing]'``), imported only when a fixture is used,
so this plugin costs nothing to sessions that do not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import FakeAPNs, FakeFCM, FakePushService

#: the bundle id ``push_fake_apns`` allows; ``app_config(topic=...)`` allows others
APNS_TOPIC = "com.example.app"


@pytest.fixture
def push_fake_webpush() -> Iterator[FakePushService]:
    """A Web Push service on 127.0.0.1 that verifies VAPID and decrypts each push."""
    from .testing import FakePushService

    with FakePushService() as service:
        yield service


@pytest.fixture
def push_fake_fcm() -> Iterator[FakeFCM]:
    """FCM HTTP v1 and its OAuth token endpoint on 127.0.0.1."""
    from .testing import FakeFCM

    with FakeFCM() as fcm:
        yield fcm


@pytest.fixture
def push_fake_apns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPNs]:
    """APNs over HTTP/2 and TLS on 127.0.0.1, for the topic ``com.example.app``.

    Its certificate is trusted through ``SSL_CERT_FILE`` (with the public roots
    beside it) until the test ends, as the APNs provider checks TLS against the
    default trust store.
    """
    from .testing import FakeAPNs

    with FakeAPNs(topic=APNS_TOPIC) as apns:
        monkeypatch.setenv("SSL_CERT_FILE", apns.certificate.trust_bundle())
        yield apns
