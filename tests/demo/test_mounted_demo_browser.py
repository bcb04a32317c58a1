"""The demo served below the site's root (at /shop, a ``DispatcherMiddleware`` mount),
in real Chromium: a shopper turns notifications on, and the service worker the page
registers is the app's, at /shop/push-sw.js.

Needs Chromium at /usr/bin/chromium, dbus, and the ``playwright`` and ``dbus-next``
packages; without them the test is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Response

from flask_push.testing import FakePushService

pytest.importorskip("playwright.sync_api")
pytest.importorskip("dbus_next")

from served_demo import browser_fixture, log_in, serving
from test_walkthrough import DESKTOP, WEB_PUSH, subscriptions_of

from browser_kit import Browser

browser = browser_fixture(viewport=DESKTOP)

#: the script URL of the page's active service worker, once it is active
ACTIVE_WORKER = """async () => {
  const registration = await navigator.serviceWorker.ready;
  return registration.active.scriptURL;
}"""


@pytest.fixture
def mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """``(origin, app)``: the demo at ``origin + "/shop"``, nothing else on the site."""
    import os

    from demo.__main__ import build, stop

    monkeypatch.setenv("SSL_CERT_FILE", os.environ.get("SSL_CERT_FILE", ""))
    app, _ = build(str(tmp_path / "instance"), config=dict(WEB_PUSH))
    site = DispatcherMiddleware(Response("not the shop", status=404), {"/shop": app})
    try:
        with serving(site) as origin:
            yield origin, app
    finally:
        stop(app)


def test_a_shopper_turns_notifications_on_in_the_demo_below_a_mount(
    mounted: tuple[str, Any], browser: Browser, push_fake_webpush: FakePushService
) -> None:
    """The page told the client its service worker was the site's /push-sw.js (and
    loaded flask-push from the site's /push), which answered 404 under a mount."""
    origin, app = mounted
    alice = "alice@example.com"
    browser.make_subscription = lambda: push_fake_webpush.subscribe("alice's laptop").info
    browser.context.grant_permissions(["notifications"], origin=origin)
    page = log_in(browser.context.new_page(), origin + "/shop", alice)
    page.locator("[data-enable-notifications]").first.click()
    page.wait_for_selector("[data-enable-notifications].btn-done")
    assert page.evaluate(ACTIVE_WORKER) == origin + "/shop/push-sw.js"
    assert subscriptions_of(app, alice) == 1
