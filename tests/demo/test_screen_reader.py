"""What a screen reader hears of the demo, in real Chromium (Playwright's accessibility
tree): the staff's bell offers no notification settings (the categories are the
shoppers' choices), while a shopper's links to hers. Screenshots at desktop and phone width go to
``$FRESHCART_SHOTS`` (a folder in the system's temporary folder by default): look at
them. Needs Chromium at /usr/bin/chromium and the ``playwright`` package; without them
the tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import expect  # noqa: E402
from served_demo import chromium_fixture, server_fixture, sign_in  # noqa: E402
from test_settings_browser import VIEWPORTS, shot  # noqa: E402

from browser_kit import TIMEOUT_MS  # noqa: E402

server = server_fixture()
chromium = chromium_fixture()


@VIEWPORTS
def test_the_staff_bell_offers_no_settings_and_a_shoppers_links_to_hers(
    server: tuple[str, Any], chromium: Any, viewport: dict[str, int]
) -> None:
    base, _app = server
    shopper = sign_in(chromium, base, "alice@example.com", viewport=viewport)
    shopper.get_by_role("button", name="Notifications (0 unread)").click()
    link = shopper.locator("#bell").get_by_role("link", name="Notification settings")
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    expect(link).to_have_attribute("href", "/settings/notifications")

    staff = sign_in(chromium, base, "staff@example.com", viewport=viewport)
    staff.get_by_role("button", name="Staff inbox (0 unread)").click()
    menu = staff.locator("#bell .fp-panel")
    expect(menu.get_by_role("button", name="See all")).to_be_visible(timeout=TIMEOUT_MS)
    expect(menu.get_by_text("Notification settings")).to_have_count(0)
    shot(staff, "staff-bell", viewport)
