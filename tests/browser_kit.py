"""Real Chromium for the tests: a persistent profile whose notifications go to a
D-Bus server of the tests' own (where a trusted click comes from), pushes handed
to a service worker through CDP, and ``PushManager.subscribe()`` answered with keys
Python made. Shared by the browser tests and the demo's walkthrough; the browser tests also
share the app served to it (``serving``, ``push``, ``db``).

TESTING.md has the recipes this follows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dbus_next
import pytest
from flask import Flask, Response, redirect, request, session
from flask_sqlalchemy import SQLAlchemy
from playwright import sync_api
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server

from flask_push import Push
from flask_push.testing.webpush import FakePushService

from conftest import close_app, need_service

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


class NotificationServer:
    """``org.freedesktop.Notifications`` on a private bus: records what Chromium shows."""

    PATH = "/org/freedesktop/Notifications"
    NAME = "org.freedesktop.Notifications"

    def __init__(self, address: str) -> None:
        self.address = address
        self.shown: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="dbus-notifications", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the D-Bus notification server did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._bus = await self._connect()
        self._bus.add_message_handler(self._handle)
        await self._bus.request_name(self.NAME)
        self._ready.set()
        await self._stop.wait()
        self._bus.disconnect()
        await self._bus.wait_for_disconnect()
        self._bus._sock.close()  # dbus-next shuts its socket down but never closes it

    async def _connect(self, timeout: float = 10) -> Any:
        """The bus, once dbus-daemon listens: its socket file appears when it is bound,
        a moment before it accepts connections (a loaded machine widens that moment),
        and dbus-next neither retries nor closes the socket of a refused connection."""
        path = self.address.removeprefix("unix:path=")
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(path)
                    break
                except (ConnectionRefusedError, FileNotFoundError):
                    if time.monotonic() > deadline:
                        raise
            await asyncio.sleep(0.05)
        return await dbus_next.aio.MessageBus(bus_address=self.address).connect()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _handle(self, msg: Any) -> Any:
        Message = dbus_next.Message
        if msg.message_type != dbus_next.MessageType.METHOD_CALL or msg.interface != self.NAME:
            return None
        if msg.member == "GetCapabilities":
            return Message.new_method_return(msg, "as", [["actions", "body", "persistence"]])
        if msg.member == "GetServerInformation":
            return Message.new_method_return(msg, "ssss", ["fake", "flask-push", "1", "1.2"])
        if msg.member == "Notify":
            _app, replaces, _icon, summary, body, actions, _hints, _timeout = msg.body
            with self._cond:
                id = replaces or len(self.shown) + 1
                self.shown.append({"id": id, "summary": summary, "body": body, "actions": actions})
                self._cond.notify_all()
            return Message.new_method_return(msg, "u", [id])
        if msg.member == "CloseNotification":
            self._signal("NotificationClosed", "uu", [msg.body[0], 3])
            return Message.new_method_return(msg)
        return None

    def _signal(self, member: str, signature: str, body: list[Any]) -> None:
        self._bus.send(dbus_next.Message.new_signal(self.PATH, self.NAME, member, signature, body))

    def wait_shown(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.shown) >= count, timeout):
                raise TimeoutError(f"Chromium showed {len(self.shown)} notifications, not {count}")
            return list(self.shown)

    def click(self, id: int) -> None:
        """What a desktop does when the user clicks the notification's body."""
        self._loop.call_soon_threadsafe(self._signal, "ActionInvoked", "us", [id, "default"])


# -- the browser ----------------------------------------------------------------------


class Browser:
    """A Chromium with a persistent profile, and the hooks tests set."""

    def __init__(self, playwright: Any, context: Any, notifications: NotificationServer) -> None:
        #: the Playwright session, for more (incognito) browsers beside this one
        self.playwright = playwright
        self.context = context
        self.notifications = notifications
        #: what PushManager.subscribe() resolves to in pages: keys made in Python
        self.make_subscription: Callable[[], dict[str, Any]] | None = None


# PushManager.subscribe() cannot reach a push service here; this one returns a
# subscription whose keys Python made, so the rest of the chain is real.
SUBSCRIBE_SCRIPT = """
PushManager.prototype.subscribe = async function (options) {
  const info = await window.flaskPushTestSubscription();
  return { endpoint: info.endpoint, expirationTime: null, options,
           toJSON: () => info, unsubscribe: async () => true };
};
"""


def need_chromium() -> None:
    """Skips (fails in CI) when Chromium is missing."""
    if not os.path.exists(CHROMIUM):
        need_service("Chromium", RuntimeError(f"{CHROMIUM} is missing (apt-get install chromium)"))


@contextmanager
def chromium(tmp: Path, viewport: dict[str, int] | None = None) -> Iterator[Browser]:
    """Chromium on a private session bus, with its notification server. Skips (fails
    in CI) when Chromium or dbus-daemon is missing."""
    need_chromium()
    dbus_daemon = shutil.which("dbus-daemon")
    if dbus_daemon is None:
        need_service("dbus-daemon", RuntimeError("it is missing (apt-get install dbus)"))
    tmp.mkdir(parents=True, exist_ok=True)
    address = f"unix:path={tmp / 'bus'}"
    daemon = subprocess.Popen(
        [str(dbus_daemon), "--session", "--nofork", "--nopidfile", f"--address={address}"],
        stdout=subprocess.DEVNULL,
    )
    notifications = NotificationServer(address)
    try:
        deadline = time.monotonic() + 10
        while not (tmp / "bus").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        notifications.start()
        with sync_api.sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(tmp / "profile"),
                executable_path=CHROMIUM,
                args=ARGS,
                headless=True,
                env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": address},
                viewport=viewport or {"width": 720, "height": 520},
            )
            context.set_default_timeout(TIMEOUT_MS)
            session = Browser(playwright, context, notifications)

            def subscription() -> dict[str, Any]:
                assert session.make_subscription is not None, "the test set no subscription"
                return session.make_subscription()

            context.expose_function("flaskPushTestSubscription", subscription)
            context.add_init_script(SUBSCRIBE_SCRIPT)
            try:
                yield session
            finally:
                context.close()
    finally:
        notifications.stop()
        daemon.terminate()
        daemon.wait(10)


def deliver(browser: Browser, page: Any, origin: str, payload: bytes, scope: str = "/") -> None:
    """Hand a push to the origin's real service worker (of ``scope``, the app's root),
    as a push service would, and wait until the desktop shows the notification it makes.

    Chromium's ``getNotifications()`` lists only what the desktop says it shows (it
    drops the rest from its database), so asking before the desktop has answered
    could lose the notification for good.
    """
    before = len(browser.notifications.shown)
    cdp = browser.context.new_cdp_session(page)
    registrations: dict[str, str] = {}

    def updated(event: dict[str, Any]) -> None:
        for registration in event["registrations"]:
            if not registration.get("isDeleted"):
                registrations[registration["scopeURL"]] = registration["registrationId"]

    cdp.on("ServiceWorker.workerRegistrationUpdated", updated)  # before enable: it reports once
    cdp.send("ServiceWorker.enable")
    deadline = time.monotonic() + 10
    while f"{origin}{scope}" not in registrations:
        assert time.monotonic() < deadline, f"no service worker registration: {registrations}"
        page.wait_for_timeout(25)
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {
            "origin": origin,
            "registrationId": registrations[f"{origin}{scope}"],
            "data": payload.decode(),
        },
    )
    cdp.detach()
    browser.notifications.wait_shown(before + 1, timeout=30)


NOTIFICATIONS = """async () => (await (await navigator.serviceWorker.ready).getNotifications())
  .map((n) => ({title: n.title, body: n.body, icon: n.icon, tag: n.tag, data: n.data}))"""


def shown(page: Any, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
    """The notifications the service worker shows, once there are ``count``.

    Asked again and again from here rather than with ``wait_for_function``: the
    answer that ended the wait is the one returned, with no second look in between.
    """
    deadline = time.monotonic() + timeout
    while True:
        result: list[dict[str, Any]] = page.evaluate(NOTIFICATIONS)
        if len(result) >= count or time.monotonic() > deadline:
            return result
        page.wait_for_timeout(50)


def off_loop(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a thread of its own: Playwright's sync API keeps an asyncio loop
    running in the test's thread, where the dispatcher cannot run its own."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# -- an app to serve it ------------------------------------------------------------------

# An app of its own: the browser proves who it is with the session cookie, as a
# host's pages (and websockets) do.
db = SQLAlchemy()
push = Push(db=db)


@push.identity_loader
def _identity() -> str | None:
    return session.get("user_id")


@push.admin_loader
def _is_admin() -> bool:
    return request.headers.get("X-Admin") == "1"


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<style>body{margin:0;font-family:system-ui,sans-serif;background:#f6f8fa}
header{display:flex;justify-content:space-between;align-items:center;padding:8px 20px;
background:#fff;border-bottom:1px solid #d0d7de}</style></head>
<body><header><strong>Shop</strong><div id="bell"></div></header>
<script src="/push/static/flask-push.js"></script></body></html>"""


class Live:
    """An app served on its own port; pages are opened at http://localhost:PORT, and
    below its mount point (``base``) when it has one."""

    def __init__(self, app: Flask, server: Any, thread: threading.Thread, mount: str = "") -> None:
        self.app = app
        self.port = server.server_port
        self.origin = f"http://localhost:{self.port}"
        #: the app's root: the origin, or the address of its mount point
        self.base = self.origin + mount
        self._server = server
        self._thread = thread

    def stop(self) -> None:
        """Stop serving the port (open websockets live on); again does nothing."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def admin_get(self, path: str) -> Any:
        response = self.app.test_client().get(path, headers={"X-Admin": "1"})
        assert response.status_code == 200, response.get_json()
        return response.get_json()


@contextmanager
def serving(tmp_path: Path, vapid_private_key: str) -> Iterator[Callable[..., Live]]:
    """Start apps with ``start(...)``, each on its own port (a ``live`` fixture's body);
    all are stopped and closed at the end."""
    servers: list[Live] = []

    def start(
        html: str = PAGE,
        csp: str | None = None,
        files: dict[str, tuple[str, str]] | None = None,
        port: int = 0,
        mount: str = "",
        **config: Any,
    ) -> Live:
        """An app serving ``html`` at / (with ``csp`` as its Content-Security-Policy)
        and ``files`` ({path: (text, mimetype)}) beside it, on ``port`` (0: a free one);
        mounted at ``mount`` (``/shop``) by a ``DispatcherMiddleware``, as a host
        serving it below the site's root would, when given."""
        app = Flask(__name__)
        app.config.update(
            TESTING=True,
            SECRET_KEY="browser-tests",
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
            PUSH_VAPID_PRIVATE_KEY=vapid_private_key,
            PUSH_VAPID_SUBJECT="mailto:ops@shop.example",
            **config,
        )
        db.init_app(app)
        push.init_app(app)
        with app.app_context():
            db.create_all()

        @app.get("/login/<user>")
        def login(user: str) -> Any:
            session["user_id"] = user
            return redirect(request.script_root + "/")

        @app.get("/")
        @app.get("/orders/<int:number>")
        def page(number: int | None = None) -> Any:
            headers = {"Content-Security-Policy": csp} if csp else {}
            return html, 200, headers

        for path, (text, mimetype) in (files or {}).items():
            app.add_url_rule(
                path, path, lambda text=text, mimetype=mimetype: Response(text, mimetype=mimetype)
            )

        site: Any = DispatcherMiddleware(NotFound(), {mount: app}) if mount else app
        server = make_server("127.0.0.1", port, site, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        servers.append(Live(app, server, thread, mount))
        return servers[-1]

    try:
        yield start
    finally:
        for each in servers:
            each.stop()
            off_loop(lambda app=each.app: close_app(app))


def open_page(browser: Browser, page: Any, live: Live, user: str | None = None) -> None:
    browser.context.grant_permissions(["notifications"], origin=live.origin)
    page.goto(f"{live.base}/login/{user}" if user else f"{live.base}/")


def register_worker(page: Any) -> None:
    page.evaluate(
        "navigator.serviceWorker.register('/push-sw.js').then(() => navigator.serviceWorker.ready)"
    )


def send_for_real(live: Live, service: FakePushService, user: str, **notification: Any) -> Any:
    """push.send through the inline queue to the FakePushService (to its first
    subscriber); the message and the push as the service decrypted it."""

    def send() -> Any:
        with live.app.app_context():
            return push.send(users=[user], **notification)

    subscriber = next(s for s in service.subscribers)
    before = len(subscriber.received)
    message = off_loop(send)
    received = subscriber.wait(before + 1)[-1]
    return message, received


SENDING = {
    "PUSH_QUEUE": "inline",
    "PUSH_SUPPRESS_SEND": False,
    "PUSH_ENDPOINT_HOSTS": ["127.0.0.1"],
    "PUSH_ALLOW_HTTP_ENDPOINTS": True,
}


def page_fixtures(name: str) -> tuple[Any, Any, Any]:
    """The fixtures ``browser, live, page`` of a module that drives flask-push's
    pages in Chromium: :func:`chromium` launched once for the module (a profile
    under a folder called ``name``), :func:`serving` for each test, and a page of
    the browser for each test, closed after it with any others the test opened.

    Module-scoped, not session-scoped: while Playwright's sync API is open, the test
    thread counts as running an asyncio loop, and later modules' asyncio.run() fails.
    """

    @pytest.fixture(scope="module")
    def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
        with chromium(tmp_path_factory.mktemp(name)) as session:
            yield session

    @pytest.fixture
    def live(tmp_path: Path, vapid_private_key: str) -> Iterator[Callable[..., Live]]:
        with serving(tmp_path, vapid_private_key) as start:
            yield start

    @pytest.fixture
    def page(browser: Browser) -> Iterator[Any]:
        page = browser.context.new_page()
        yield page
        browser.make_subscription = None
        for each in browser.context.pages:
            each.close()

    return browser, live, page
