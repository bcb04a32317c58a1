"""What a screen reader hears of the demo, in real Chromium (Playwright's accessibility
tree): a button that each line of a list repeats names its line, the cart's link says
how many items it holds, and the staff's bell offers no notification settings (the
categories are the shoppers' choices), while a shopper's links to hers. Screenshots
at desktop and phone width go to ``$FRESHCART_SHOTS`` (a folder in the system's
temporary folder by default): look at them. Needs Chromium at /usr/bin/chromium and
the ``playwright`` package; without them the tests are skipped, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import expect
from served_demo import chromium_fixtures, server_fixture, sign_in
from test_settings_browser import VIEWPORTS, shot

from browser_kit import TIMEOUT_MS

server = server_fixture()
chromium_session, chromium = chromium_fixtures()
#: a control's words as a person sees them: without those only screen readers get
SEEN = """(control) => [...control.childNodes]
  .filter((node) => !(node.classList && node.classList.contains('sr-only')))
  .map((node) => node.textContent).join('').trim()"""


def fill_cart(page: Any, base: str) -> None:
    for path in ("/products/avocados", "/offers/berry-weekend"):
        page.goto(base + path)
        page.get_by_role("button", name="Add to cart").click()
        page.wait_for_url(base + "/cart")


@VIEWPORTS
def test_each_remove_button_names_its_item(
    server: tuple[str, Any], chromium: Any, viewport: dict[str, int]
) -> None:
    base, _app = server
    page = sign_in(chromium, base, "carol@example.com", viewport=viewport)
    cart = page.locator("a.cart-link")
    expect(cart).to_have_accessible_name("Cart (0 items)", timeout=TIMEOUT_MS)
    fill_cart(page, base)
    # the badge's count is heard too, not "Cart" alone
    expect(cart).to_have_accessible_name("Cart (2 items)")
    lines = page.get_by_role("main").get_by_role("listitem")
    expect(lines).to_have_count(2, timeout=TIMEOUT_MS)
    # not "Remove, Remove": which line each one takes away
    names = ["Remove Hass avocados (4)", "Remove Berry weekend"]
    for line, name in zip(lines.all(), names, strict=True):
        expect(line.get_by_role("button")).to_have_accessible_name(name, timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Remove", exact=True)).to_have_count(0)
    # what a person sees stays one word
    assert lines.first.get_by_role("button").evaluate(SEEN) == "Remove"
    shot(page, "cart-named", viewport)

    page.get_by_role("button", name="Remove Berry weekend").click()
    expect(lines).to_have_count(1, timeout=TIMEOUT_MS)
    expect(page.get_by_text("Berry weekend")).to_have_count(0)


def test_each_demo_accounts_button_names_its_account(
    server: tuple[str, Any], chromium: Any
) -> None:
    base, _app = server
    page = chromium.new_page()
    page.goto(base + "/login")
    accounts = page.locator(".demo-accounts").get_by_role("button")
    expect(accounts).to_have_count(4, timeout=TIMEOUT_MS)
    for email in ("staff@example.com", "alice@example.com", "bob@example.com"):
        expect(page.get_by_role("button", name=f"Use {email}", exact=True)).to_have_text("Use")
    page.get_by_role("button", name="Use carol@example.com").click()
    page.wait_for_url(base + "/")
    expect(page.get_by_role("link", name="Cart (0 items)")).to_be_visible()


@VIEWPORTS
def test_each_advance_button_of_the_board_names_its_order(
    server: tuple[str, Any], chromium: Any, viewport: dict[str, int]
) -> None:
    base, _app = server
    for email in ("alice@example.com", "bob@example.com"):
        shopper = sign_in(chromium, base, email, viewport=viewport)
        fill_cart(shopper, base)
        shopper.get_by_role("button", name="Place order").click()
        shopper.wait_for_selector("[data-order-status]")
        shopper.context.close()
    staff = sign_in(chromium, base, "staff@example.com", viewport=viewport)
    placed = staff.locator(".column").first
    buttons = placed.get_by_role("button")
    expect(buttons).to_have_count(2, timeout=TIMEOUT_MS)
    # newest first; each says which order it moves, not "Confirmed →" twice
    expect(buttons.nth(0)).to_have_accessible_name("Move order #2 to Confirmed")
    expect(buttons.nth(1)).to_have_accessible_name("Move order #1 to Confirmed")
    assert buttons.nth(0).evaluate(SEEN) == "Confirmed\u00a0→"
    shot(staff, "board-named", viewport)

    staff.get_by_role("button", name="Move order #1 to Confirmed").click()
    confirmed = staff.locator(".column").nth(1)
    expect(confirmed.get_by_role("button")).to_have_accessible_name("Move order #1 to Preparing")


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
