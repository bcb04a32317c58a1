"""pytest fixtures for an app's own tests: flask-push's local push services.

Registered through the ``pytest11`` entry point, so any test session where
flask-push is installed has them, with no fixture code to write:

- ``push_fake_webpush``: a started :class:`~flask_push.testing.FakePushService`;
- ``push_fake_fcm``: a started :class:`~flask_push.testing.FakeFCM`;
- ``push_fake_apns``: a started :class:`~flask_push.testing.FakeAPNs` for the topic
  ``com.example.app``, trusted by this process for the test's duration;
- ``push_fakes``: a :class:`PushFakes` that starts more of them, with options
  (``push_fakes.webpush(tls=True)``, ``push_fakes.apns(delay=0.1)``...); those
  that serve TLS are trusted too.

Each fake is stopped when the test ends. Its ``app_config()`` gives the ``PUSH_*``
keys that aim an app at it; pass them to the app factory, before ``init_app``. The
fakes need the ``testing`` extra (``pip install '../flask-push[testing]'``), imported
only when a fixture is used, so this plugin costs nothing to sessions that do not.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from .testing import FakeAPNs, FakeFCM, FakePushService
    from .testing.service import FakeService

    _Fake = TypeVar("_Fake", bound=FakeService[Any])

__all__ = ["APNS_TOPIC", "PushFakes"]

#: the bundle id ``push_fake_apns`` allows; ``app_config(topic=...)`` allows others
APNS_TOPIC = "com.example.app"


class PushFakes:
    """Starts fake push services for one test, and stops them all after it.

    What the ``push_fakes`` fixture gives: for a test that needs a fake with options,
    or several of one kind. Each method takes the fake's own constructor arguments
    and returns it started.

    .. versionadded:: 0.1
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self._started: list[FakeService[Any]] = []
        #: the certificates trusted in this test (PEM), and where their bundles go
        self._trusted: list[str] = []
        self._bundles: str | None = None

    def webpush(self, *, trusted: bool = True, **options: Any) -> FakePushService:
        """A started :class:`~flask_push.testing.FakePushService` (``tls``, ``delay``...).

        One that serves TLS (``tls=True``) is trusted as :meth:`apns` says, unless
        ``trusted=False``.
        """
        from .testing import FakePushService

        service = self._start(FakePushService(**options))
        if trusted and service.certificate is not None:
            self._trust(service.certificate.cert_file)
        return service

    def fcm(self, **options: Any) -> FakeFCM:
        """A started :class:`~flask_push.testing.FakeFCM` (``delay``, ``check_tokens``)."""
        from .testing import FakeFCM

        return self._start(FakeFCM(**options))

    def apns(self, topic: str = APNS_TOPIC, *, trusted: bool = True, **options: Any) -> FakeAPNs:
        """A started :class:`~flask_push.testing.FakeAPNs` for ``topic``.

        ``trusted`` points ``SSL_CERT_FILE`` at a bundle of the public roots and the
        certificates of every fake trusted so far, until the test ends, as the
        Web Push and APNs providers check TLS against the default trust store. ``trusted=False``
        leaves the trust store alone, for a test of an untrusted server.
        """
        from .testing import FakeAPNs

        apns = self._start(FakeAPNs(topic, **options))
        if trusted:
            self._trust(apns.certificate.cert_file)
        return apns

    def _trust(self, cert_file: str) -> None:
        """Trust ``cert_file`` too: ``SSL_CERT_FILE`` names a new bundle of the
        public roots and every certificate trusted in this test. Kept as text, in a
        folder of this object's: a fake stopped early takes its own folder along.
        Each bundle has a name of its own, since trust stores are kept per name."""
        import certifi  # requests' dependency, so always installed with flask-push

        self._trusted.append(Path(cert_file).read_text(encoding="ascii"))
        if self._bundles is None:
            self._bundles = tempfile.mkdtemp(prefix="flask-push-trust-")
        bundle = Path(self._bundles) / f"trusted-{len(self._trusted)}.pem"
        roots = Path(certifi.where()).read_text(encoding="ascii")
        bundle.write_text("\n".join([roots, *self._trusted]), encoding="ascii")
        self._monkeypatch.setenv("SSL_CERT_FILE", str(bundle))

    def stop(self) -> None:
        """Stop every fake started here, the newest first (stopping twice is harmless)."""
        while self._started:
            self._started.pop().stop()
        if self._bundles is not None:
            shutil.rmtree(self._bundles, ignore_errors=True)
            self._bundles = None

    def _start(self, fake: _Fake) -> _Fake:
        fake.start()
        self._started.append(fake)
        return fake


@pytest.fixture
def push_fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[PushFakes]:
    """Starts fakes with options (``push_fakes.webpush(tls=True)``); stops them after,
    and first the delivery workers of the apps the test made (``shutdown``)."""
    with fakes_for_a_test(monkeypatch) as fakes:
        yield fakes


@contextmanager
def fakes_for_a_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[PushFakes]:
    """What :func:`push_fakes` gives a test, and what it stops after it. An app a
    test made and let go (README's ``test_slow.py``: the ``thread`` queue, no
    ``push.shutdown()``) kept its worker thread polling its database for good: one
    thread and one pool of connections more for each such test, and a worker that
    could claim a later test's pushes in a database they share."""
    from .extension import made_since, made_so_far

    mark, thread = made_so_far(), threading.get_ident()
    fakes = PushFakes(monkeypatch)
    try:
        yield fakes
    finally:
        try:
            # the apps this test's thread made (another thread's may be another test's)
            for state in made_since(mark, thread):
                try:
                    state.shutdown()
                except Exception:  # the others are shut down all the same
                    logging.getLogger("flask_push").exception(
                        "flask-push: an app the test made could not be shut down"
                    )
        finally:
            fakes.stop()


@pytest.fixture
def push_fake_webpush(push_fakes: PushFakes) -> FakePushService:
    """A Web Push service on 127.0.0.1 that verifies VAPID and decrypts each push."""
    return push_fakes.webpush()


@pytest.fixture
def push_fake_fcm(push_fakes: PushFakes) -> FakeFCM:
    """FCM HTTP v1 and its OAuth token endpoint on 127.0.0.1."""
    return push_fakes.fcm()


@pytest.fixture
def push_fake_apns(push_fakes: PushFakes) -> FakeAPNs:
    """APNs over HTTP/2 and TLS on 127.0.0.1, for the topic ``com.example.app``.

    Its certificate is trusted through ``SSL_CERT_FILE`` (with the public roots
    beside it) until the test ends, as the APNs provider checks TLS against the
    default trust store.
    """
    return push_fakes.apns()
