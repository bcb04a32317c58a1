"""flask-push's pytest plugin: the fakes as fixtures, aimed at an app by ``app_config()``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_push.pytest_plugin import PushFakes
from flask_push.testing import FakeAPNs, FakeFCM, FakePushService

from conftest import db, push


def test_the_plugin_is_registered_by_its_entry_point(pytestconfig: pytest.Config) -> None:
    # Installed as a pytest11 entry point, not loaded by this suite's conftest.
    plugin = pytestconfig.pluginmanager.get_plugin("flask_push")
    assert plugin is not None and plugin.__name__ == "flask_push.pytest_plugin"


def test_each_fixture_is_a_started_fake(
    push_fake_webpush: FakePushService, push_fake_fcm: FakeFCM, push_fake_apns: FakeAPNs
) -> None:
    assert push_fake_webpush.running and push_fake_apns.running
    assert push_fake_fcm.base_url.startswith("http://127.0.0.1:")
    # the APNs fake's certificate is trusted, beside the public roots
    text = Path(os.environ["SSL_CERT_FILE"]).read_text()
    own = Path(push_fake_apns.certificate.cert_file).read_text()
    assert own in text and text.count("BEGIN CERTIFICATE") > 10


def test_push_fakes_starts_fakes_with_options_and_stops_them_all(push_fakes: PushFakes) -> None:
    trust_store = os.environ.get("SSL_CERT_FILE")
    https = push_fakes.webpush(tls=True, trusted=False)
    slow = push_fakes.fcm(delay=0.1)
    untrusted = push_fakes.apns("com.example.shop", trusted=False)
    assert https.origin.startswith("https://127.0.0.1:") and slow.delay == 0.1
    assert untrusted.topics == {"com.example.shop"}
    assert os.environ.get("SSL_CERT_FILE") == trust_store  # left alone
    trusted = push_fakes.apns()
    also = push_fakes.webpush(tls=True)
    # one bundle: the public roots, and both trusted fakes' certificates
    text = Path(os.environ["SSL_CERT_FILE"]).read_text()
    for fake in (trusted, also):
        assert fake.certificate is not None
        assert Path(fake.certificate.cert_file).read_text() in text
    assert Path(https.certificate.cert_file).read_text() not in text  # type: ignore[union-attr]
    assert text.count("BEGIN CERTIFICATE") > 10

    # a fake stopped early leaves the trust of the others whole
    also.stop()
    assert Path(os.environ["SSL_CERT_FILE"]).read_text() == text
    again = push_fakes.webpush(tls=True)
    assert again.certificate is not None
    assert (
        Path(again.certificate.cert_file).read_text()
        in Path(os.environ["SSL_CERT_FILE"]).read_text()
    )

    push_fakes.stop()  # what the fixture does after the test

    assert not any(fake.running for fake in (https, slow, untrusted, trusted, also, again))
    assert not Path(os.environ["SSL_CERT_FILE"]).exists()  # its bundles go too


def test_a_web_push_fake_over_tls_is_trusted_beside_the_apns_one(
    make_app: Any, push_fakes: PushFakes
) -> None:
    """Both fakes serve TLS with certificates of their own: the app's sessions,
    made after the fixture set ``SSL_CERT_FILE``, trust both."""
    apns = push_fakes.apns()
    browser_service = push_fakes.webpush(tls=True)
    app: Flask = make_app(
        PUSH_QUEUE="inline", **{**apns.app_config(), **browser_service.app_config()}
    )
    assert "PUSH_ALLOW_HTTP_ENDPOINTS" not in browser_service.app_config()
    browser = browser_service.subscribe("alice")
    assert browser.endpoint.startswith("https://127.0.0.1:")
    with app.app_context():
        db.session.add_all(
            [
                push.models.Subscription(
                    endpoint=browser.endpoint, p256dh=browser.p256dh, auth=browser.auth,
                    user_id="alice", topics=[],
                ),
                push.models.Installation(
                    app_id="shop", device_type="ios", device_token="ab" * 32,
                    user_id="alice", subscriptions=[],
                ),
            ]
        )  # fmt: skip
        db.session.commit()
        message = push.send(users=["alice"], title="Order #42")
    assert message.recipient_count == 2
    assert browser.wait(1)[0].json()["title"] == "Order #42"
    assert apns.wait(1)[0].aps["alert"]["title"] == "Order #42"


@pytest.fixture
def database(tmp_path: Any) -> dict[str, Any]:
    return {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.db'}"}


def test_app_config_aims_an_app_at_all_three(
    make_app: Any,
    push_fake_webpush: FakePushService,
    push_fake_fcm: FakeFCM,
    push_fake_apns: FakeAPNs,
) -> None:
    # TESTING stays on (make_app sets it): app_config() turns suppression off itself.
    config = {
        **push_fake_webpush.app_config(),
        **push_fake_fcm.app_config(),
        **push_fake_apns.app_config(),
    }
    app: Flask = make_app(PUSH_QUEUE="inline", **config)
    browser = push_fake_webpush.subscribe("alice")
    with app.app_context():
        db.session.add_all(
            [
                push.models.Subscription(
                    endpoint=browser.endpoint, p256dh=browser.p256dh, auth=browser.auth,
                    user_id="alice", topics=[],
                ),
                push.models.Installation(
                    app_id="shop", device_type="android", device_token="f" * 64,
                    user_id="alice", subscriptions=[],
                ),
                push.models.Installation(
                    app_id="shop", device_type="ios", device_token="ab" * 32,
                    user_id="alice", subscriptions=[],
                ),
            ]
        )  # fmt: skip
        db.session.commit()
        message = push.send(users=["alice"], title="Order #42")
    assert message.recipient_count == 3
    assert browser.wait(1)[0].json()["title"] == "Order #42"
    assert push_fake_fcm.wait(1)[0].notification == {"title": "Order #42"}
    assert push_fake_apns.wait(1)[0].aps["alert"]["title"] == "Order #42"


def test_the_apps_a_test_let_go_stop_their_workers_with_its_fakes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """README's test_slow.py: an app of the test's own on the default ``thread``
    queue, a real send, no ``push.shutdown()``. Its worker thread kept polling the
    test's database for good, and kept the app: one thread and one pool more for
    each such test. The fakes' fixture stops the workers of the apps made in it."""
    import gc
    import threading
    import weakref

    from flask_sqlalchemy import SQLAlchemy

    from flask_push import Push
    from flask_push.pytest_plugin import fakes_for_a_test

    def one_test(fakes: PushFakes) -> tuple[weakref.ref[Flask], str]:
        service = fakes.webpush()
        own_db = SQLAlchemy()
        own = Push(db=own_db)
        app = Flask("let_go")
        app.config.update(
            TESTING=True,
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
            **service.app_config(),  # the default thread queue
        )
        own_db.init_app(app)
        own.init_app(app)
        browser = service.subscribe()
        with app.app_context():
            own_db.create_all()
            own_db.session.add(
                own.models.Subscription(
                    endpoint=browser.endpoint, p256dh=browser.p256dh, auth=browser.auth,
                    user_id="alice", topics=[],
                )
            )  # fmt: skip
            own_db.session.commit()
            own.send(users=["alice"], title="Back in stock")
        assert browser.wait(1)[0].json()["title"] == "Back in stock"
        return weakref.ref(app), f"flask-push-worker:{app.name}"

    with fakes_for_a_test(monkeypatch) as fakes:
        app, worker = one_test(fakes)
        assert worker in {thread.name for thread in threading.enumerate()}
    assert worker not in {thread.name for thread in threading.enumerate()}
    gc.collect()
    assert app() is None
