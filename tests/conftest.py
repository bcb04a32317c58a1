"""Fixtures: a fresh app per test, on SQLite and on the real PostgreSQL.

Tests that need a service the machine lacks are skipped with the reason,
except under ``CI=true``, where a missing service fails the run.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import types
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from py_vapid import Vapid

from flask_push import Push
from flask_push.credentials import vapid_raw_private_key
from flask_push.realtime import backplane as backplane_module

#: tmp_path's root: the RAM disk where the machine has one with room to spare. Each
#: commit to a test's SQLite file waits for the disk otherwise (about 40 ms of every
#: SQLite test's setup went to creating the tables), and no test needs its files to
#: outlive the machine. ``PYTEST_DEBUG_TEMPROOT`` is pytest's own setting for it; one
#: given outside wins.
RAM_DISK = Path("/dev/shm")
if RAM_DISK.is_dir() and os.access(RAM_DISK, os.W_OK):
    if shutil.disk_usage(RAM_DISK).free >= 2 * 1024**3:
        os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(RAM_DISK))

POSTGRES_URL = os.environ.get(
    "PUSH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
T = TypeVar("T")

db = SQLAlchemy()
push = Push(db=db)


@push.identity_loader
def _identity() -> str | None:
    # Tests say who they are with a header; a host would read its session.
    return request.headers.get("X-User")


@push.admin_loader
def _is_admin() -> bool:
    return request.headers.get("X-Admin") == "1"


#: modules with tests that take many seconds each (a fresh virtualenv, worker
#: processes, browsers, sweeps), in the order to start them. They run first: a worker
#: that met one near the end of the run kept the others waiting for half a minute.
SLOW_FIRST = [
    "test_readme.py",
    "test_celery_queue.py",
    "test_console_browser.py",
    "test_contrast_browser.py",
    "test_hostile_input.py",
    "test_sigkill.py",
    "test_timeline_cost.py",
    "test_delivery_faults.py",
    "test_backplane.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a stable sort: each module's tests keep their order and stay together
    rank = {name: number for number, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))


def need_service(name: str, error: Exception | None) -> None:
    """Skip (or, in CI, fail) when a service the test needs is unreachable."""
    if error is None:
        return
    message = f"{name} is not reachable: {error}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


#: the Redis the tests use (keys under a prefix of each test's own)
REDIS_URL = os.environ.get("PUSH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the real Redis; its keys are deleted after."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as err:
        client.close()
        need_service("Redis", err)
    prefix = f"fp-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


def instant(text: str) -> datetime:
    """A time the API wrote (RFC 3339, ``Z`` for UTC), on every Python: 3.10's
    ``datetime.fromisoformat`` reads no ``Z``."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds, asked every
    20 ms: a bound on a hang, never a measure of speed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture(scope="session")
def vapid_private_key() -> str:
    vapid = Vapid()
    vapid.generate_keys()
    return vapid_raw_private_key(vapid)


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[tuple[str, str]]:
    """A schema of its own in the test database, so parallel runs never collide."""
    schema = f"flask_push_test_{uuid.uuid4().hex[:10]}"
    try:
        engine = sa.create_engine(POSTGRES_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except Exception as err:  # noqa: BLE001 - any failure means "not reachable"
        yield "", str(err)
        return
    yield schema, ""
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, Any]:
    """Flask-SQLAlchemy config for one database: every test runs on both."""
    if request.param == "sqlite":
        return {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.db'}"}
    schema, error = request.getfixturevalue("postgres_schema")
    need_service("PostgreSQL", RuntimeError(error) if error else None)
    return {
        "SQLALCHEMY_DATABASE_URI": POSTGRES_URL,
        # no wait for the WAL to reach the disk at each commit: what a commit shows
        # other sessions is the same, and the tests never crash the server
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "connect_args": {"options": f"-csearch_path={schema} -csynchronous_commit=off"}
        },
    }


@pytest.fixture
def make_app(
    database: dict[str, Any], vapid_private_key: str, push_fakes: Any
) -> Iterator[Callable[..., Flask]]:
    """Build an app with flask-push set up; keyword arguments override config, and
    ``before`` and ``after`` set up a host's own extensions before or after
    ``push.init_app``."""
    # ``push_fakes`` is set up first so that it is stopped last: the apps close their
    # connections to the fake push services before those stop. A fake APNs stopped
    # first waits half a second for an idle app's client to answer its TLS close.
    del push_fakes
    apps: list[Flask] = []

    def factory(
        *,
        before: Callable[[Flask], Any] | None = None,
        after: Callable[[Flask], Any] | None = None,
        **config: Any,
    ) -> Flask:
        app = Flask(__name__)
        app.config.update(
            TESTING=True,
            PUSH_VAPID_PRIVATE_KEY=vapid_private_key,
            PUSH_VAPID_SUBJECT="mailto:ops@shop.example",
            **database,
        )
        app.config.update(config)
        if before is not None:
            before(app)
        db.init_app(app)
        push.init_app(app)
        if after is not None:
            after(app)
        with app.app_context():
            db.create_all()
        apps.append(app)
        return app

    yield factory
    for app in apps:
        tear_down(app)


def tear_down(app: Flask) -> None:
    """Stop ``app``'s delivery worker thread, drop its tables and close its
    connections: nothing leaks into the next test."""
    close_app(app, drop=True)


def close_app(app: Flask, *, drop: bool = False) -> None:
    """Stop ``app``'s delivery worker thread and close its connections, whichever
    ``SQLAlchemy`` it has (the tests', a module's own, the demo's); with ``drop``,
    drop its tables first."""
    app_db = app.extensions["sqlalchemy"]
    with app.app_context():
        app.extensions["push"].shutdown()
        app_db.session.remove()
        if drop:
            app_db.drop_all()
        app_db.engine.dispose()


@contextmanager
def bare_app(config: dict[str, Any]) -> Iterator[Flask]:
    """An app with flask-push on ``config`` alone: no tables made or dropped (a
    database that is unreachable, read-only, or without them)."""
    app = Flask(__name__)
    app.config.update(config)
    db.init_app(app)
    push.init_app(app)
    try:
        yield app
    finally:
        close_app(app)


def read_only(database: dict[str, Any], statement: str) -> tuple[dict[str, Any], str]:
    """``database`` as a read-only replica of it (the SQLite file opened read-only;
    every PostgreSQL transaction read-only), and what its driver says to
    ``statement`` ("UPDATE", "INSERT")."""
    if database["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        path = database["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")
        uri = f"sqlite:///file:{path}?mode=ro&uri=true"
        return {"SQLALCHEMY_DATABASE_URI": uri}, "attempt to write a readonly database"
    options = database["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]["options"]
    replica = {
        **database,
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "connect_args": {"options": f"{options} -cdefault_transaction_read_only=on"}
        },
    }
    return replica, f"cannot execute {statement} in a read-only transaction"


def named_connections(database: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """PostgreSQL engine options whose connections carry a name of their own (their
    ``application_name``), for :func:`end_connections`; and that name."""
    name = f"flask-push-test-{uuid.uuid4().hex[:12]}"
    options = dict(database["SQLALCHEMY_ENGINE_OPTIONS"])
    options["connect_args"] = {**options["connect_args"], "application_name": name}
    return name, options


def end_connections(name: str) -> None:
    """End the server side of the connections named ``name``, as a PostgreSQL restart
    does: their pool still holds them, and their next statement fails."""
    killer = sa.create_engine(POSTGRES_URL)
    with killer.begin() as admin:
        ended = admin.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": name},
        ).all()
    killer.dispose()
    assert ended


#: the SECRET_KEY of sending_app's apps, which signs their click tokens
SENDING_SECRET = "test-secret"


@pytest.fixture
def sending_app(make_app: Callable[..., Flask], push_fake_fcm: Any) -> Callable[..., Flask]:
    """An app that really sends, inline unless told: Web Push to endpoints on
    127.0.0.1 over HTTP (the FakePushService) and FCM to the FakeFCM."""

    def factory(**config: Any) -> Flask:
        settings = {
            "PUSH_QUEUE": "inline",
            "PUSH_SUPPRESS_SEND": False,
            "PUSH_ENDPOINT_HOSTS": ["127.0.0.1"],
            "PUSH_ALLOW_HTTP_ENDPOINTS": True,
            "PUSH_FCM_CREDENTIALS": push_fake_fcm.service_account(),
            "PUSH_FCM_BASE_URL": push_fake_fcm.base_url,
            "SECRET_KEY": SENDING_SECRET,
            **config,
        }
        return make_app(**settings)

    return factory


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


@pytest.fixture
def app_ctx(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


def browser_keys() -> dict[str, str]:
    """Keys as a browser makes them: a P-256 point and a 16-byte secret."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    raw = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {"p256dh": b64url(raw), "auth": b64url(os.urandom(16))}


@pytest.fixture
def make_subscription() -> Callable[..., dict[str, Any]]:
    """``PushSubscription.toJSON()`` of a Chrome browser, with fresh keys."""

    def factory(**extra: Any) -> dict[str, Any]:
        token = uuid.uuid4().hex
        return {
            "endpoint": f"https://fcm.googleapis.com/fcm/send/{token}",
            "expirationTime": None,
            "keys": browser_keys(),
            **extra,
        }

    return factory


def pem(key: Any) -> str:
    """A private key as unencrypted PKCS8 PEM text (a .p8 file's content)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@functools.cache
def _service_account_pem() -> str:
    """The RSA key of :func:`service_account`: one a process, as making one takes
    about 80 ms (a test of another key makes its own)."""
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def service_account(**overrides: Any) -> dict[str, Any]:
    """A Firebase service-account key (the process's one RSA key)."""
    info = {
        "type": "service_account",
        "project_id": "shop-123",
        "client_email": "push@shop-123.iam.gserviceaccount.com",
        "private_key": _service_account_pem(),
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    info.update(overrides)
    return info


PEERS = Path(__file__).parent / "peers" / "node_modules"


class WebPushTesting:
    """web-push-testing (npm): an outside Web Push service that decrypts what it gets."""

    def __init__(self, port: int) -> None:
        self.origin = f"http://localhost:{port}"

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.origin + path,
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            raw = response.read()
            is_json = response.headers.get_content_type() == "application/json"
            return json.loads(raw) if is_json and raw else raw.decode()

    def subscribe(self, vapid_public_key: str) -> dict[str, Any]:
        """A subscription bound to our VAPID key; ``clientHash`` names it here."""
        data = self._post(
            "/subscribe", {"userVisibleOnly": "true", "applicationServerKey": vapid_public_key}
        )["data"]
        return {
            "endpoint": data["endpoint"],
            "keys": data["keys"],
            "clientHash": data["clientHash"],
        }

    def notifications(self, client_hash: str) -> list[Any]:
        return list(
            self._post("/get-notifications", {"clientHash": client_hash})["data"]["messages"]
        )

    def expire(self, client_hash: str) -> None:
        self._post(f"/expire-subscription/{client_hash}")


@pytest.fixture(scope="session")
def web_push_testing() -> Iterator[WebPushTesting]:
    """The npm peer, started once (``make test`` installs it into tests/peers)."""
    server = PEERS / "web-push-testing" / "src" / "bin" / "server.js"
    node = shutil.which("node")
    if node is None or not server.exists():
        need_service(
            "web-push-testing",
            RuntimeError(
                "run `npm ci --prefix tests/peers` (make test does) with Node.js installed"
            ),
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [node, str(server), str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    reader = threading.Thread()
    try:
        line = process.stdout.readline()  # it says when it listens
        if f"Server running on port {port}" not in line:
            need_service("web-push-testing", RuntimeError(f"it said {line!r}"))
        # keep reading what it logs, so that a full pipe never blocks it
        reader = threading.Thread(target=process.stdout.read, daemon=True)
        reader.start()
        yield WebPushTesting(port)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if reader.is_alive():
            reader.join(timeout=5)
        process.stdout.close()


async def deliver(provider: Any, pushes: Sequence[Any]) -> list[Any]:
    """One batch through ``provider.send_batch``: the tests' helpers call it only here."""
    return list(await provider.send_batch(pushes))


def run_provider(provider: Any, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` in a fresh event loop, then close the provider's connections."""

    async def main() -> T:
        try:
            return await work()
        finally:
            await provider.aclose()

    return asyncio.run(main())


def send_batch(provider: Any, pushes: Sequence[Any]) -> list[Any]:
    """Send through a provider in a fresh event loop, then close its connections."""
    return run_provider(provider, lambda: deliver(provider, pushes))


@contextmanager
def sending_held(service: Any, worker: Any, message_id: str) -> Iterator[None]:
    """``worker`` (a ``Dispatcher``) sending ``message_id`` on a thread of its own while
    the fake push ``service`` holds its answers; on leaving, the service answers, the
    send ends and the worker is closed."""
    service.hold()
    sending = threading.Thread(target=worker.run_until_idle, kwargs={"message_id": message_id})
    sending.start()
    try:
        yield
    finally:
        service.release()
        sending.join(30)
        worker.close()


def add_subscription(
    user_id: str | None = None, topics: list[str] | None = None, **values: Any
) -> Any:
    """A browser's subscription, stored directly (as ``POST /subscriptions`` would);
    ``values`` (a fake's ``endpoint``, ``p256dh`` and ``auth``, say) replace the
    made-up ones."""
    keys = browser_keys()
    made = {
        "endpoint": f"https://fcm.googleapis.com/fcm/send/{uuid.uuid4().hex}",
        "p256dh": keys["p256dh"],
        "auth": keys["auth"],
    }
    subscription = push.models.Subscription(
        user_id=user_id, topics=topics or [], **{**made, **values}
    )
    db.session.add(subscription)
    db.session.commit()
    return subscription


def later() -> datetime:
    """An hour from now: a ``send_at`` that schedules."""
    return datetime.now(timezone.utc) + timedelta(hours=1)


def make_due(message_id: str, **values: Any) -> None:
    """As if time had passed: the message's rows are due now (``values``: other
    columns to set on them)."""
    model, held = push.models.Delivery, push.models.ScheduledInboxItem
    values.setdefault("due_at", datetime.now(timezone.utc) - timedelta(seconds=1))
    db.session.execute(sa.update(model).where(model.message_id == message_id).values(**values))
    # the inbox items a scheduled message holds come due with it
    db.session.execute(
        sa.update(held).where(held.message_id == message_id).values(due_at=values["due_at"])
    )
    db.session.commit()


def subscribe(subscriber: Any, user_id: str | None = "alice") -> Any:
    """A fake push service's subscriber (a ``FakeSubscriber``), stored as its browser's
    subscription."""
    subscription = push.models.Subscription(
        endpoint=subscriber.endpoint,
        p256dh=subscriber.p256dh,
        auth=subscriber.auth,
        user_id=user_id,
        topics=[],
    )
    db.session.add(subscription)
    db.session.commit()
    return subscription


def as_user(user: str | None, admin: bool = False) -> dict[str, str]:
    headers = {}
    if user is not None:
        headers["X-User"] = user
    if admin:
        headers["X-Admin"] = "1"
    return headers


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL of every round trip to the database while the block runs."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()[:3]))

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)


#: a worker's claim of every due delivery no worker holds, as dispatch's claim takes
#: them (PostgreSQL; SKIP LOCKED: it takes none that another transaction has locked)
A_WORKERS_CLAIM = sa.text(
    "UPDATE push_deliveries SET lease_until = now() + interval '30 s', attempts = attempts + 1 "
    "WHERE id IN (SELECT id FROM push_deliveries WHERE status = 'queued' AND due_at <= now() "
    "AND (lease_until IS NULL OR lease_until < now()) FOR UPDATE SKIP LOCKED)"
)


@contextmanager
def a_claim_before(statement: str) -> Iterator[list[int]]:
    """A worker's claim (:data:`A_WORKERS_CLAIM`), committed on a connection of its own
    just before the first statement of ``db.engine`` that starts with ``statement``
    runs: as a worker that claims the rows a write read a moment before. Yields a list
    that gets how many rows the claim took."""
    claimed: list[int] = []

    def claim(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if claimed or not sql.startswith(statement):
            return
        with db.engine.connect() as worker:
            taken = worker.execute(A_WORKERS_CLAIM).rowcount
            worker.commit()
        claimed.append(taken)

    sa.event.listen(db.engine, "before_cursor_execute", claim)
    try:
        yield claimed
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", claim)
    assert claimed, f"no statement began with {statement!r}"


def many_subscriptions(n: int, owner: Callable[[int], str | None] = lambda i: None) -> None:
    """Replace every subscription by ``n`` of them (one key pair shared), in one INSERT;
    ``owner(i)`` is the user of the ``i``-th."""
    s = push.models.Subscription.__table__
    db.session.execute(sa.delete(s))
    keys = browser_keys()
    now = datetime.now(timezone.utc)
    db.session.execute(
        sa.insert(s),
        [
            {
                "id": f"sub_{n}_{i:08d}",
                "endpoint": f"https://fcm.googleapis.com/fcm/send/{n}-{i}",
                "p256dh": keys["p256dh"],
                "auth": keys["auth"],
                "user_id": owner(i),
                "topics": [],
                "status": "active",
                "created_at": now,
                "last_seen_at": now,
            }
            for i in range(n)
        ],
    )
    db.session.commit()


def quiet_now(user: str = "alice") -> None:
    """Quiet hours for ``user`` from an hour ago to an hour from now (UTC)."""
    now = datetime.now(timezone.utc)
    window = {
        "start": f"{now - timedelta(hours=1):%H:%M}",
        "end": f"{now + timedelta(hours=1):%H:%M}",
    }
    push.set_preferences(user, quiet_hours={**window, "time_zone": "UTC"})


@pytest.fixture
def same_utc_day() -> None:
    """For a test that compares the sentences its pushes' timelines were given with
    times it says as :func:`flask_push.outcomes.clock` does (the date only when not
    today, UTC): it starts with a minute or more left in the UTC day, so the day
    does not turn between a sentence written and the test's reading of it (run
    across midnight, "at 2026-12-08 02:59 UTC" was written and "at 02:59 UTC"
    expected)."""
    now = datetime.now(timezone.utc)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
    left = (midnight - now).total_seconds()
    if left < 60:
        time.sleep(left + 0.01)


@pytest.fixture
def backplane_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The clock by which the backplanes keep events, moved by the test
    (``clock[0] += 2``) instead of slept through: on a busy machine a sleep of
    about the keep window can let events expire that the test means to keep."""
    clock = [time.monotonic()]
    fake = types.SimpleNamespace(monotonic=lambda: clock[0], time_ns=time.time_ns)
    monkeypatch.setattr(backplane_module, "time", fake)
    return clock
