"""Spacing in the demo that a person sees, measured in real Chromium at 1280 and
390 px: a list that ends its panel has as much room below it as above it.

Needs Chromium at /usr/bin/chromium and the ``playwright`` package; without them the
test is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

from served_demo import chromium_fixtures, server_fixture, sign_in

WIDTHS = {"1280": {"width": 1280, "height": 900}, "390": {"width": 390, "height": 844}}

#: (room above the panel's first line, room below its last line, the panel's own
#: padding), in px
ROOM = """(selector) => {
  const list = document.querySelector(selector);
  const panel = list.closest('.panel');
  const lines = list.querySelectorAll(':scope > .line');
  const outer = panel.getBoundingClientRect();
  const first = lines[0].getBoundingClientRect();
  const last = lines[lines.length - 1].getBoundingClientRect();
  const style = getComputedStyle(panel);
  const border = parseFloat(style.borderTopWidth) || 0;
  return [first.top - outer.top - border, outer.bottom - last.bottom - border,
          parseFloat(style.paddingBottom)];
}"""

server = server_fixture()
chromium_session, chromium = chromium_fixtures()


@pytest.mark.parametrize("width", list(WIDTHS))
def test_a_list_ending_its_panel_has_as_much_room_below_as_above(
    server: tuple[str, Any], chromium: Any, width: str
) -> None:
    """The rows of "Your orders" (and the staff's configured providers) had 12 px more
    below the last than above the first: the list's margin, meant for a total after
    it, added to the panel's padding."""
    base, _app = server
    alice = sign_in(chromium, base, "alice@example.com", viewport=WIDTHS[width])
    alice.request.post(base + "/cart", form={"product_id": "1"})
    alice.request.post(base + "/checkout")
    alice.goto(base + "/orders")
    above, below, padding = alice.evaluate(ROOM, ".panel > ul.lines")
    assert abs(above - below) < 1 and abs(below - padding) < 1, (above, below, padding)
    staff = sign_in(chromium, base, "staff@example.com", viewport=WIDTHS[width])
    staff.goto(base + "/staff/providers")
    # its heading is above the list: below it, the panel's padding alone
    _, below, padding = staff.evaluate(ROOM, ".panel > ul.lines")
    assert abs(below - padding) < 1, (below, padding)
