"""The demo as ``make demo`` runs it (fake FCM and APNs, delivery workers), served on
localhost (a secure context, where service workers and Web Push run), for the
browser tests of the demo, and their fixtures: a test module takes the ones it needs
by name, ``server = server_fixture(WEB_PUSH)``,
``chromium_session, chromium = chromium_fixtures()``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server


@contextmanager
def served_demo(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config: Mapping[str, Any] | None = None,
    **settings: Any,
) -> Iterator[tuple[str, Any]]:
    """``(base URL, app)`` of the demo built with ``config`` in ``tmp_path``;
    ``settings`` are set on the app's config once it is built."""
    from demo.__main__ import build, stop

    # build() points SSL_CERT_FILE at the fake APNs' CA bundle: undo it afterwards
    monkeypatch.setenv("SSL_CERT_FILE", os.environ.get("SSL_CERT_FILE", ""))
    app, _ = build(str(tmp_path / "instance"), **({"config": dict(config)} if config else {}))
    app.config.update(settings)
    try:
        with serving(app) as base:
            yield base, app
    finally:
        stop(app)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The base URL of ``app`` served on localhost by a thread, until the block ends,
    and then until the requests in hand have ended (10 s at most)."""
    requests = _InHand(app)
    http = make_server("127.0.0.1", 0, requests, threaded=True)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://localhost:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(10)
        http.server_close()
        # A request's thread outlives the server's shutdown (it serves its keep-alive
        # connection to its end): one still in a view, an order's push.send say, would
        # start the app's delivery worker again after stop() had stopped it, and that
        # thread would run on into the next tests.
        requests.wait_until_none(10)


class _InHand:
    """``app``, counting the requests it is in the middle of."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._count = 0
        self._changed = threading.Condition()

    def __call__(self, environ: Any, start_response: Any) -> Any:
        with self._changed:
            self._count += 1
        try:
            return self.app(environ, start_response)
        finally:
            with self._changed:
                self._count -= 1
                self._changed.notify_all()

    def wait_until_none(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._count == 0, timeout)


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """A plain (incognito) Chromium; skips when it is missing (fails under CI=true)."""
    from playwright import sync_api

    from browser_kit import ARGS, CHROMIUM, need_chromium

    need_chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def submit_login(page: Any, base: str, email: str) -> Any:
    """Fills in and sends the demo's sign-in form at ``base`` on ``page`` as ``email``
    (every seeded account has the same password)."""
    from demo.seed import PASSWORD

    page.goto(base + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.stack button[type=submit]")
    return page


def log_in(page: Any, base: str, email: str) -> Any:
    """``page`` signed in as ``email``, once the page it lands on has loaded."""
    from browser_kit import TIMEOUT_MS

    page.set_default_timeout(TIMEOUT_MS)
    submit_login(page, base, email)
    page.wait_for_load_state("networkidle")
    return page


def notifications_on(browser: Any, base: str, service: Any, device: str, email: str) -> Any:
    """``email`` signs in on ``browser`` (a ``browser_kit.Browser``) and turns
    notifications on, with a subscription of the Web Push fake ``service`` named
    ``device``: the page, once its button says they are on."""
    browser.make_subscription = lambda: service.subscribe(device).info
    browser.context.grant_permissions(["notifications"], origin=base)
    page = log_in(browser.context.new_page(), base, email)
    page.locator("[data-enable-notifications]").first.click()
    page.wait_for_selector("[data-enable-notifications].btn-done")
    return page


def sign_in(browser: Any, base: str, email: str, **context: Any) -> Any:
    """A page of a new context of ``browser`` (``context``: its options, such as the
    viewport), signed in as ``email`` (:func:`log_in`)."""
    return log_in(browser.new_context(**context).new_page(), base, email)


def server_fixture(config: Mapping[str, Any] | None = None, **settings: Any) -> Any:
    """A ``server`` fixture: ``(base URL, app)`` of the demo served with ``config`` and
    ``settings`` (see :func:`served_demo`), a fresh one for each test."""

    @pytest.fixture
    def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
        with served_demo(tmp_path, monkeypatch, config, **settings) as served:
            yield served

    return server


def chromium_fixtures() -> tuple[Any, Any]:
    """The fixtures ``chromium_session, chromium``: a plain Chromium
    (:func:`launched_chromium`) launched once for the test module, since a launch
    costs about a second; and, for each test, that browser with no context open. The
    contexts a test opens are closed after it, and Playwright's contexts share
    nothing (cookies, storage, permissions, service workers), so each test starts as
    in a browser of its own."""

    # Module-scoped, not session-scoped: while Playwright's sync API is open, the
    # test thread counts as running an asyncio loop (see tests/test_browser.py).
    @pytest.fixture(scope="module")
    def chromium_session() -> Iterator[Any]:
        with launched_chromium() as browser:
            yield browser

    @pytest.fixture
    def chromium(chromium_session: Any) -> Iterator[Any]:
        yield chromium_session
        for context in chromium_session.contexts:
            context.close()

    return chromium_session, chromium


def browser_fixture(viewport: dict[str, int]) -> Any:
    """A ``browser`` fixture: ``browser_kit``'s Chromium with a persistent profile whose
    notifications go to the test's D-Bus server, pages of ``viewport``, for each test."""

    @pytest.fixture
    def browser(tmp_path: Path) -> Iterator[Any]:
        from browser_kit import chromium

        with chromium(tmp_path / "chromium", viewport=viewport) as session:
            yield session

    return browser
