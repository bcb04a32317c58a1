"""The staff's orders board in real Chromium: a shopper's new order shows on the open
board without a reload (it comes to the staff's bell, and the board is drawn again
then). Needs Chromium at /usr/bin/chromium and the ``playwright`` package; without
them the test is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

from served_demo import chromium_fixtures, log_in, server_fixture, sign_in

DESKTOP = {"width": 1280, "height": 900}
#: marks the page once a websocket (flask-push's) is open; the server joins the
#: user's channel just after, which a ping answered confirms
WEBSOCKET_OPEN = """window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener('open', () => { window.pushSocketOpen = true; });
  }
};"""

server = server_fixture()
chromium_session, chromium = chromium_fixtures()


def place_order(page: Any, base: str) -> str:
    """The order's number, placed on ``page`` from the avocados' page."""
    page.goto(base + "/products/avocados")
    page.click("text=Add to cart")
    page.click("text=Place order")
    page.wait_for_selector("[data-live].on")
    return str(page.url.rsplit("/", 1)[1])


def test_a_new_order_shows_on_the_open_board(server: tuple[str, Any], chromium: Any) -> None:
    """The board showed an order only once reloaded: the staff saw "New order #1" come
    to the bell over a board without it, and could not move it along."""
    from playwright.sync_api import expect

    base, _app = server
    staffs = chromium.new_context(viewport=DESKTOP)
    staffs.add_init_script(WEBSOCKET_OPEN)
    staff = log_in(staffs.new_page(), base, "staff@example.com")
    alice = sign_in(chromium, base, "alice@example.com", viewport=DESKTOP)
    staff.wait_for_function("window.pushSocketOpen === true")
    # answered once the server joined the staff's channel (the bound only ends a hang)
    staff.evaluate(
        """() => Promise.race([FlaskPush.ping(), new Promise((_, fail) =>
             setTimeout(() => fail(new Error('no pong in 10 s')), 10000))])"""
    )
    staff.evaluate("window.notReloaded = true")
    placed = staff.locator(".column").first

    first = place_order(alice, base)
    expect(placed.locator(".ticket", has_text=f"#{first}")).to_be_visible()
    second = place_order(alice, base)
    expect(placed.locator(".ticket")).to_have_count(2)
    assert placed.locator(".ticket").first.text_content().strip().startswith(f"#{second}")
    assert staff.evaluate("window.notReloaded") is True

    # the keyboard stays on the button it was on while the board is drawn again
    move_first = placed.get_by_role("button", name=f"Move order #{first} to Confirmed")
    move_first.focus()
    third = place_order(alice, base)
    expect(placed.locator(".ticket", has_text=f"#{third}")).to_be_visible()
    expect(move_first).to_be_focused()

    # and it is moved along from there, as from a board loaded with it
    staff.keyboard.press("Enter")
    confirmed = staff.locator(".column").nth(1)
    expect(confirmed.locator(".ticket", has_text=f"#{first}")).to_be_visible()
