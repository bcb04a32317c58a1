"""The demo's staff pages in real Chromium: what they show of what was stored.

Needs Chromium at /usr/bin/chromium and the ``playwright`` package; without them the
test is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

from served_demo import chromium_fixtures, server_fixture, sign_in

server = server_fixture()
chromium_session, chromium = chromium_fixtures()

#: an app id that is markup: an administrator stored it, the page must show it as text
MARKUP = "<img src=x onerror=\"window.ran='providers'\">shop"


def test_the_providers_page_shows_what_was_stored_as_text(
    server: tuple[str, Any], chromium: Any, vapid_private_key: str
) -> None:
    """The staff's providers page built its table from the stored app ids as HTML:
    one that was markup ran its script (the console's providers page shows it as
    text)."""
    base, _app = server
    staff = sign_in(chromium, base, "staff@example.com")
    stored = staff.request.post(
        base + "/push/providers",
        data={
            "appId": MARKUP,
            "kind": "webpush",
            "settings": {"privateKey": vapid_private_key, "subject": "mailto:ops@shop.example"},
        },
    )
    assert stored.status == 201, stored.text()
    staff.goto(base + "/staff/providers")
    staff.wait_for_selector("[data-providers] table")
    assert staff.inner_text("[data-providers] code") == MARKUP
    assert staff.evaluate("window.ran") is None
