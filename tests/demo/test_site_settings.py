"""Notifications blocked, then allowed again, in the browser's site settings, in real
Chromium. Chrome ends the site's push subscription when its notifications are
blocked, and does not bring it back when they are allowed again: the page must then
offer to turn them on, not say they are on while nothing can arrive.

Here Chromium never holds a subscription of its own (``PushManager.subscribe()`` is
answered with keys Python made, see ``browser_kit``), so after a reload its real
``getSubscription()`` says what Chrome says once it has dropped one: there is none.

Needs Chromium at /usr/bin/chromium, dbus, and the ``playwright`` and ``dbus-next``
packages; without them the test is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

from typing import Any

import pytest

from flask_push.testing import FakePushService

pytest.importorskip("playwright.sync_api")
pytest.importorskip("dbus_next")

from served_demo import browser_fixture, notifications_on, server_fixture
from test_walkthrough import DESKTOP, WEB_PUSH, subscriptions_of

from browser_kit import Browser

server = server_fixture(WEB_PUSH)
browser = browser_fixture(viewport=DESKTOP)


def test_allowed_again_without_a_subscription_offers_to_turn_them_on(
    server: tuple[str, Any], browser: Browser, push_fake_webpush: FakePushService
) -> None:
    from playwright.sync_api import expect

    base, app = server
    alice = "alice@example.com"
    page = notifications_on(browser, base, push_fake_webpush, "alice's laptop", alice)
    button = page.locator("[data-enable-notifications]").first
    expect(button).to_have_text("Notifications on")

    # blocked in the site's settings, later allowed again: no subscription is left
    browser.context.clear_permissions()
    page.reload()
    expect(button).to_have_text("Enable notifications")
    browser.context.grant_permissions(["notifications"], origin=base)
    page.reload()
    page.wait_for_load_state("networkidle")
    assert (
        page.evaluate("navigator.serviceWorker.ready.then((r) => r.pushManager.getSubscription())")
        is None
    )
    expect(button).to_have_text("Enable notifications")
    assert button.is_enabled()

    # so she turns them on again, and this browser has a subscription that works
    button.click()
    expect(button).to_have_text("Notifications on")
    assert subscriptions_of(app, alice) == 2  # the dropped one until a 410
