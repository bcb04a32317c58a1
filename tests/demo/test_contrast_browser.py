"""Text colour contrast in real Chromium, at 1280 and 390 px: axe-core's
``color-contrast`` rule (WCAG 2.1 AA: 4.5:1, 3:1 for large text) over the operator
console's pages, the demo storefront's (a visitor's, a shopper's, the staff's), and
the bell with its menu open: the demo's, in the shop's colours, and flask-push's own
on a plain page, with its settings dialog. The test fails listing every node that
fails, with its colours.

axe-core leaves disabled controls out (WCAG exempts them), yet a page can fade one
past reading: the quiet hours' times and zone, waiting to be chosen, read at 2-3:1.
Their text, and their labels', is held to 4.5:1 here too, measured through the
opacity of every box it is in. No stylesheet has a dark scheme
(``prefers-color-scheme``): there is none to check.

axe-core comes from npm, through tests/peers (``make test`` installs it). Needs
Chromium at /usr/bin/chromium and the ``playwright`` package; without them, or without
axe-core, the test is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

import test_console_browser  # noqa: E402
from served_demo import chromium_fixtures, served_demo  # noqa: E402

from demo.seed import PASSWORD  # noqa: E402

from browser_kit import db as kit_db  # noqa: E402
from browser_kit import off_loop, serving  # noqa: E402
from browser_kit import push as kit_push  # noqa: E402
from conftest import PEERS, need_service  # noqa: E402

AXE = PEERS / "axe-core" / "axe.min.js"
WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}

chromium_session, chromium = chromium_fixtures()
# the console's app with its data (failed, gone, retrying, cancelled deliveries...),
# as its own browser tests have it
console = test_console_browser.console

#: the nodes axe-core finds failing: its violations, and what it left "incomplete"
#: with the colours measured (a count of one digit is "too short" for it to be sure
#: it is text, and a count is read); not those over an image or a gradient, which
#: it cannot measure
FAILING = """async () => {
  const results = await axe.run(document, {
    runOnly: {type: 'rule', values: ['color-contrast']},
    resultTypes: ['violations', 'incomplete'],
  });
  return [...results.violations, ...results.incomplete].flatMap((rule) => rule.nodes)
    .map((node) => ({node, data: (node.any[0] || {}).data || {}}))
    .filter(({data}) => data.contrastRatio
      && data.contrastRatio < parseFloat(data.expectedContrastRatio))
    .map(({node, data}) => ({
      target: node.target.join(' '), html: node.html.slice(0, 80), fg: data.fgColor,
      bg: data.bgColor, ratio: data.contrastRatio, needed: data.expectedContrastRatio,
    }));
}"""

#: the text of disabled controls (a checkbox or radio has none) and of their labels,
#: under 4.5:1: its colour and the backgrounds behind it, each box's opacity applied
#: to what it paints, from the element up to the page's white
DIMMED = """() => {
  const rgba = (value) => {
    const [r, g, b, a = 1] = value.match(/[\\d.]+/g).map(Number);
    return [r, g, b, a];
  };
  const over = (top, under) => {
    const alpha = top[3] + under[3] * (1 - top[3]);
    if (!alpha) return [0, 0, 0, 0];
    const mix = (i) => (top[i] * top[3] + under[i] * under[3] * (1 - top[3])) / alpha;
    return [mix(0), mix(1), mix(2), alpha];
  };
  const luminance = (color) => {
    const [r, g, b] = color.slice(0, 3).map((v) => {
      v /= 255;
      return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const hex = (color) => '#' + color.slice(0, 3)
    .map((v) => Math.round(v).toString(16).padStart(2, '0')).join('');
  const controls = [...document.querySelectorAll('button, input, select, textarea')]
    .filter((el) => el.disabled && !['checkbox', 'radio', 'hidden'].includes(el.type));
  const labels = [...document.querySelectorAll('label')]
    .filter((label) => label.control && label.control.disabled);
  return [...controls, ...labels].filter((el) => el.getClientRects().length).map((el) => {
    let text = rgba(getComputedStyle(el).color);
    let back = [0, 0, 0, 0];
    for (let box = el; box; box = box.parentElement) {
      const style = getComputedStyle(box);
      const fill = rgba(style.backgroundColor);
      [text, back] = [over(text, fill), over(back, fill)];
      text[3] *= parseFloat(style.opacity);
      back[3] *= parseFloat(style.opacity);
    }
    const white = [255, 255, 255, 1];
    [text, back] = [over(text, white), over(back, white)];
    const [light, dark] = [luminance(text), luminance(back)].sort((a, b) => b - a);
    const ratio = Math.round(((light + 0.05) / (dark + 0.05)) * 100) / 100;
    const words = (value) => value.replace(/\\s+/g, ' ').trim();
    const shown = el.tagName === 'SELECT' ? (el.selectedOptions[0] || {}).text || ''
      : el.tagName === 'INPUT' ? el.value : el.textContent;
    const name = `${el.name ? `[name=${el.name}]` : ''} "${words(shown).slice(0, 30)}"`;
    return {target: `${el.tagName.toLowerCase()}${name} (disabled)`,
            html: words(el.outerHTML).slice(0, 80), fg: hex(text), bg: hex(back), ratio,
            needed: '4.5:1'};
  }).filter((node) => node.ratio < 4.5);
}"""


#: once the transitions and animations running have ended
SETTLED = """() => Promise.all(document.getAnimations()
  .filter((running) => running.effect.getTiming().iterations !== Infinity)
  .map((running) => running.finished.catch(() => null)))"""


class Contrast:
    """axe-core's source, and the failing nodes of each page checked."""

    def __init__(self) -> None:
        if not AXE.exists():
            need_service(
                "axe-core",
                RuntimeError("run `npm ci --prefix tests/peers` (make test does) with Node.js"),
            )
        self.source = AXE.read_text()
        self.failing: list[str] = []

    def check(self, page: Any, name: str) -> None:
        """Runs the checks on ``page`` as it is now (``name``: where, for the report)."""
        page.wait_for_load_state("load")
        # colours at rest: the Phones page's buttons, disabled until its script has
        # run, take 0.15 s to turn from the pale green of a disabled one to green
        page.evaluate(SETTLED)
        # evaluated through the DevTools protocol: no Content-Security-Policy applies
        # (the console's refuses inline scripts)
        if not page.evaluate("typeof axe !== 'undefined'"):
            page.evaluate(self.source)
        width = page.viewport_size["width"]
        for node in page.evaluate(FAILING) + page.evaluate(DIMMED):
            self.failing.append(
                f"{name} at {width} px: {node['target']}: {node['fg']} on {node['bg']} is "
                f"{node['ratio']}:1, needs {node['needed']} ({node['html']})"
            )


def new_page(browser: Any, viewport: dict[str, int], **headers: str) -> Any:
    page = browser.new_context(viewport=viewport).new_page()
    page.set_extra_http_headers(headers)
    return page


def signed_in(browser: Any, viewport: dict[str, int], base: str, email: str) -> Any:
    """A page of a context of its own whose cookie signs ``email`` in to the demo
    (the sign-in form's request, without loading its page)."""
    page = new_page(browser, viewport)
    page.request.post(base + "/login", form={"email": email, "password": PASSWORD})
    return page


def visit_console(contrast: Contrast, page: Any, url: Callable[[str], str], ids: Any) -> None:
    pages = {
        "overview": "/",
        "messages": "/messages",
        "message": f"/messages/{ids['sale']}",
        # its Cancel and Retry failed are disabled: a live activity's last state
        "activity": f"/messages/{ids['order']}",
        "user": "/users?id=alice",
        "providers": "/providers",
    }
    for name, path in pages.items():
        page.goto(url(path))
        for details in page.query_selector_all("details.timeline"):
            details.evaluate("(d) => { d.open = true; }")
        contrast.check(page, f"console {name}")
    page.goto(url("/send?user=alice&title=Back%20in%20stock"))
    page.click("button[value=preview]")
    page.wait_for_selector("#preview-fcm pre")
    contrast.check(page, "console send, previewed")


def visit_pages(
    contrast: Contrast, page: Any, base: str, pages: dict[str, str], ready: dict[str, str]
) -> None:
    """Checks each of ``pages`` (name: path under ``base``) in ``page``, once the
    selector ``ready`` names for it, if any, is on it."""
    for name, path in pages.items():
        page.goto(base + path)
        if name in ready:
            page.wait_for_selector(ready[name])
        contrast.check(page, name)


def visit_demo(
    contrast: Contrast, base: str, order: str, visitor: Any, shopper: Any, staff: Any
) -> None:
    visit_pages(contrast, visitor, base, {"demo login": "/login"}, {})
    shopper_pages = {
        "demo home": "/",
        "demo product": "/products/avocados",
        "demo cart": "/cart",
        "demo orders": "/orders",
        "demo order": order,
        "demo notifications": "/notifications",
        # quiet hours off: their times and zone are disabled, and dimmed
        "demo settings": "/settings/notifications",
        "demo phones": "/devices",
    }
    visit_pages(contrast, shopper, base, shopper_pages, {})
    shopper.goto(base + "/")
    shopper.click(".fp-bell-button")
    shopper.wait_for_selector(".fp-panel:not([hidden]) .fp-item")
    contrast.check(shopper, "demo bell menu")
    staff_pages = {
        "staff board": "/staff/",
        "staff offers": "/staff/offers",
        "staff messages": "/staff/messages",
        "staff providers": "/staff/providers",
        "staff installations": "/staff/installations",
    }
    # the messages page lists the messages it fetches
    visit_pages(contrast, staff, base, staff_pages, {"staff messages": "[data-messages] .message"})


def visit_bell(contrast: Contrast, page: Any, origin: str) -> None:
    page.goto(f"{origin}/login/bob")
    page.evaluate("window.bell = FlaskPush.bell(document.getElementById('bell'))")
    page.evaluate("window.bell.ready")
    page.click(".fp-bell-button")
    page.wait_for_selector(".fp-panel:not([hidden]) .fp-item")
    contrast.check(page, "bell menu")
    # no quiet hours yet: their times and zone are disabled
    page.click(".fp-show-settings")
    page.wait_for_selector(".fp-settings[open] .fp-prefs-form")
    contrast.check(page, "bell settings")


def test_text_contrast_of_the_console_the_demo_and_the_bell(
    chromium: Any,
    console: test_console_browser.Console,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    vapid_private_key: str,
) -> None:
    contrast = Contrast()
    (tmp_path / "bell").mkdir()
    with (
        served_demo(tmp_path / "demo", monkeypatch) as (base, _app),
        serving(tmp_path / "bell", vapid_private_key) as start,
    ):
        plain = start(
            PUSH_CATEGORIES={
                "orders": {"label": "Order updates", "required": True},
                "offers": {"label": "Offers and deals"},
            }
        )

        def fill_inbox() -> None:
            with plain.app.app_context():
                for notify_type, title in (("orders", "Order #42 shipped"), ("error", "Declined")):
                    kit_push.upsert("bob", notify_type=notify_type, title=title, body="Details")
                kit_push.upsert("bob", title="Export", progress={"total": 4, "processed": 1})
                kit_db.session.remove()

        off_loop(fill_inbox)
        viewport = WIDTHS["desktop"]
        visitor = new_page(chromium, viewport)
        shopper = signed_in(chromium, viewport, base, "alice@example.com")
        staff = signed_in(chromium, viewport, base, "staff@example.com")
        # her phones and an order: its page, its inbox item, the staff's board, its
        # Live Activity. Advanced before the Phones page is open again, whose iPhone
        # then registers the activity's own token: the state it missed goes to that
        # token in a message of no category (a tag of the staff's Messages page).
        shopper.goto(base + "/devices")
        shopper.click("text=Add iPhone")
        shopper.wait_for_selector(".category-tag:has-text('Live Activities')")
        shopper.click("text=Add Android phone")
        shopper.wait_for_selector(".device-android")
        shopper.goto(base + "/cart")
        shopper.request.post(base + "/cart", form={"product_id": "1"})
        order = shopper.request.post(base + "/checkout").url.removeprefix(base)
        staff.request.post(f"{base}/staff{order}/advance")
        shopper.goto(base + "/devices")
        shopper.wait_for_selector("[data-live-activity][data-token=own]")
        shopper.request.post(base + "/cart", form={"product_id": "2"})
        staff.request.post(
            base + "/staff/messages",
            form={"audience": "all", "category": "news", "title": "Open on Sunday", "url": "/"},
        )
        admin = new_page(chromium, viewport, **test_console_browser.ADMIN_HEADERS)
        bell = new_page(chromium, viewport)
        for viewport in WIDTHS.values():
            for page in (visitor, shopper, staff, admin, bell):
                page.set_viewport_size(viewport)
            visit_console(contrast, admin, console.url, console.ids)
            visit_demo(contrast, base, order, visitor, shopper, staff)
            visit_bell(contrast, bell, plain.origin)
        # the pages' websockets closed, the servers stop at once
        for page in (visitor, shopper, staff, admin, bell):
            page.context.close()
    assert contrast.failing == [], "text under its contrast:\n" + "\n".join(contrast.failing)
