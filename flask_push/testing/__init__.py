"""Local push services that speak the real protocols, for offline end-to-end tests.

Each fake runs in a background thread on 127.0.0.1 and checks what it receives
as the real service would, so an app's own tests can send through the real
client libraries (pywebpush, pyfcm, aioapns) without any network:

- :class:`FakePushService`: a Web Push service that verifies VAPID and decrypts
  aes128gcm payloads (RFC 8030, 8291, 8292);
- :class:`FakeFCM`: FCM HTTP v1 with its OAuth token endpoint;
- :class:`FakeAPNs`: APNs over HTTP/2 and TLS with token (.p8) auth.

They share one base, :class:`~flask_push.testing.service.FakeService`: each can
script failures (gone, rate-limited, server errors), wait for what arrives, be slow
(``delay``) or hang (``hold()`` until ``release()``), and counts the requests
``in_flight``. The pytest plugin (:mod:`flask_push.pytest_plugin`) hands them to
tests as fixtures. They need the ``testing`` extra: ``pip install '../flask-push[testing]'``
(the folder flask-push was installed from).
"""

from __future__ import annotations

from ..errors import install_command

try:
    from .apns import FakeAPNs, ReceivedNotification
    from .fcm import FakeFCM, ReceivedMessage
    from .service import FakeService, ScriptedFailure
    from .tls import LocalCertificate, make_local_certificate
    from .webpush import FakePushService, FakeSubscriber, ReceivedPush
except ImportError as err:
    if (err.name or "").startswith("flask_push"):
        raise
    # a package of the extra: say which, and how to install them all
    raise ImportError(
        f"flask_push.testing needs flask-push's 'testing' extra ({err.name!r} is not "
        f"installed): {install_command('testing')}",
        name=err.name,
    ) from err

__all__ = [
    "FakeAPNs",
    "FakeFCM",
    "FakePushService",
    "FakeService",
    "FakeSubscriber",
    "LocalCertificate",
    "ReceivedMessage",
    "ReceivedNotification",
    "ReceivedPush",
    "ScriptedFailure",
    "make_local_certificate",
]
