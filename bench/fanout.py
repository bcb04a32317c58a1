"""Benchmark of Web Push fan-out: N subscribers at a local HTTPS push service.

Run ``.venv/bin/python bench/fanout.py``; ``--help`` lists the options. In one run
the script measures, each against the same local push service:

1. a local HTTPS push service in a process of its own (aiohttp on 127.0.0.1, TLS
   from :func:`flask_push.testing.tls.make_local_certificate`): every
   ``POST /push/<id>`` is answered with 201 after ``asyncio.sleep(0.02)``, without
   decrypting, and counted in shared memory with the time of the last 201;
2. baseline A, the naive loop: ``pywebpush.webpush()`` once per subscriber, one
   after the other, on a sample (``--naive-sample``), extrapolated to N;
3. baseline B, the encryption ceiling: RFC 8291 aes128gcm encryption
   (``http_ece.encrypt`` with a fresh ephemeral key per push, as a sender must)
   of a ~200-byte payload for every subscriber, in 1 and in 2 processes;
4. the product path: a Flask app with ``Push(db=db)`` on PostgreSQL (schema
   ``flask_push_bench_fanout``), N Web Push subscriptions bulk-inserted with fresh
   keys, timed from ``push.send(everyone=True, ...)`` to the last 201 at the push
   service, with the default ``thread`` queue in the sending process, and again
   with extra worker processes that run ``push.dispatch_due()``; peak memory
   (``ru_maxrss``) of every process involved. ``--path provider`` measures
   ``WebPushProvider.send_batch`` over the N targets instead (provider only,
   not the product path);
5. issue 15, the default setup (``--setup default`` or ``both``): the product path
   on SQLite with the thread queue in one process (C0), against the best Python peer
   (P: pywebpush's ``webpush_async`` on one aiohttp session, 100 in flight) and the
   Python floor (F: http_ece encryption and a bare aiohttp POST; F1 the same with
   flask-push's one-record encryption), each in a process of its own against the same
   push service, their runs interleaved with C0's; the ratios C0 / P (goal 1.5x) and
   C0 / F (goal 80%);
6. FCM and APNs throughput of the providers' ``send_batch`` against
   :class:`~flask_push.testing.FakeFCM` and :class:`~flask_push.testing.FakeAPNs`
   (each fake in a process of its own).

Then it prints a table with medians and whether the goals of issue 3 are met:
at least 100x the naive loop, at least 40% of the 2-process encryption ceiling,
peak memory under 300 MiB at N = 100,000 (``--subscribers 100000``). It asserts
nothing about speed: it measures and reports.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import importlib.util
import io
import math
import multiprocessing as mp
import multiprocessing.connection as mpc
import multiprocessing.sharedctypes as mps
import os
import pstats
import re
import resource
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import flask_push
from flask_push import Push

DEFAULT_DATABASE_URL = os.environ.get(
    "PUSH_BENCH_DATABASE_URL",
    os.environ.get("PUSH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)
DEFAULT_SCHEMA = "flask_push_bench_fanout"
_SCHEMA_NAME = re.compile(r"flask_push_bench_fanout[a-z0-9_]*")
DEFAULT_KEY_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flask-push"
#: the push service's answer time
SERVICE_DELAY = 0.02
VAPID_SUBJECT = "mailto:bench@example.com"
TITLE = "Flash sale: 30% off everything in the shop until midnight"
BODY = "Your basket is waiting. Open the app to see the deals picked for you today."
#: the issue's goals
GOAL_NAIVE_FACTOR = 100.0
GOAL_CEILING_SHARE = 0.40
#: issue 15: the default setup against the best Python peer and the Python floor
GOAL_PEER_FACTOR = 1.5
GOAL_FLOOR_SHARE = 0.80
DEFAULT_LABEL = "C0 push.send(everyone), default setup: SQLite, thread queue, 1 process"
PEER_LABEL = "P peer: pywebpush webpush_async, one aiohttp session, 100 in flight"
FLOOR_LABEL = "F floor: encrypt (http_ece) + bare aiohttp POST, 100 in flight (no flask-push)"
FLOOR_ONE_RECORD_LABEL = "F1 floor, with flask-push's one-record encryption instead of http_ece"
GOAL_MEMORY_MIB = 300.0
GOAL_MEMORY_N = 100_000
APNS_TOPIC = "com.example.bench"

# The spawn start method everywhere: children start clean (no inherited threads,
# pools or connections) and their ru_maxrss is their own.
SPAWN = mp.get_context("spawn")


def maxrss_mib() -> float:
    """Peak resident memory of this process, in MiB.

    On Linux, ``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` survives
    ``execve``, so a spawned child would report its parent's size at fork time
    when that is larger (the parent holds N keys). Elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


# -- the local push service (a process of its own) -----------------------------------


def _serve_push(
    cert_file: str,
    key_file: str,
    count: mps.Synchronized[int],
    last: mps.Synchronized[float],
    conn: mpc.Connection,
    delay: float = SERVICE_DELAY,
) -> None:
    """POST /push/<id>: 201 after ``delay`` seconds; counts and stamps each 201."""
    from aiohttp import web

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    # the raw values under the locks: one writer (this event loop), readers only read
    counter = count.get_obj()
    stamp = last.get_obj()

    async def push(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(delay)
        counter.value += 1
        stamp.value = time.monotonic()
        return web.Response(status=201)

    async def main() -> None:
        app = web.Application(client_max_size=8192)
        app.router.add_post("/push/{id}", push)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context, backlog=1024)
        await site.start()
        conn.send(runner.addresses[0][1])
        loop = asyncio.get_running_loop()
        # Serve until the parent says stop (or goes away); answer its questions.
        while await loop.run_in_executor(None, conn.recv) != "stop":
            conn.send(time.process_time())
        conn.send(maxrss_mib())
        await runner.cleanup()

    try:
        asyncio.run(main())
    except EOFError:
        pass


@dataclass
class PushService:
    process: Any
    conn: mpc.Connection
    port: int
    count: Any
    last: Any

    def endpoint(self, i: int) -> str:
        return f"https://127.0.0.1:{self.port}/push/{i}"

    def wait_for(self, target: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count.value < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def cpu(self) -> float:
        """CPU seconds the service process has used so far."""
        self.conn.send("cpu")
        return float(self.conn.recv())

    def stop(self) -> float | None:
        rss: float | None = None
        try:
            self.conn.send("stop")
            if self.conn.poll(10):
                rss = self.conn.recv()
        except (BrokenPipeError, EOFError, OSError):
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
        return rss


def local_credentials(directory: str) -> tuple[Any, str]:
    """A certificate for the local push service, which the product's processes
    trust, and a fresh VAPID key (raw, as ``PUSH_VAPID_PRIVATE_KEY`` takes it)."""
    from py_vapid import Vapid

    from flask_push.credentials import vapid_raw_private_key
    from flask_push.testing.tls import make_local_certificate

    cert = make_local_certificate(directory)
    # The product's WebPushProvider trusts the system store, which honours
    # SSL_CERT_FILE when set before the process starts: the product's children
    # (spawned, or started as commands) inherit it.
    os.environ["SSL_CERT_FILE"] = cert.cert_file
    vapid = Vapid()
    vapid.generate_keys()
    return cert, vapid_raw_private_key(vapid)


def start_push_service(cert_file: str, key_file: str, delay: float = SERVICE_DELAY) -> PushService:
    """The push service in a process of its own, answering each push after ``delay``."""
    count = SPAWN.Value("q", 0)
    last = SPAWN.Value("d", 0.0)
    parent, child = SPAWN.Pipe()
    process = SPAWN.Process(
        target=_serve_push, args=(cert_file, key_file, count, last, child, delay), daemon=True
    )
    process.start()
    if not parent.poll(60):
        raise RuntimeError("the push service did not start")
    return PushService(process, parent, parent.recv(), count, last)


# -- subscriber keys (made once, cached on disk) -------------------------------------

_RECORD = 65 + 16


def subscriber_keys(n: int, cache: Path | None) -> tuple[list[tuple[bytes, bytes]], float, bool]:
    """N (p256dh, auth) pairs, fresh P-256 public keys; returns them, the seconds
    spent and whether they came from the cache. The private halves are not kept:
    the push service does not decrypt."""
    started = time.perf_counter()
    path = cache / "bench-fanout-keys.bin" if cache else None
    data = b""
    if path is not None and path.exists():
        data = path.read_bytes()
        data = data[: len(data) - len(data) % _RECORD]
    cached = len(data) // _RECORD >= n
    if not cached:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        more = bytearray(data)
        for _ in range(n - len(data) // _RECORD):
            public = ec.generate_private_key(ec.SECP256R1()).public_key()
            more += public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
            more += os.urandom(16)
        data = bytes(more)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
    keys = [
        (data[i * _RECORD : i * _RECORD + 65], data[i * _RECORD + 65 : (i + 1) * _RECORD])
        for i in range(n)
    ]
    return keys, time.perf_counter() - started, cached


# -- baseline A: the naive pywebpush loop --------------------------------------------


def naive_loop(
    service: PushService, cert_file: str, keys: Sequence[tuple[bytes, bytes]], payload: str
) -> tuple[list[float], int]:
    """``webpush()`` once per subscriber; returns the seconds of each call and the
    number of 201s the service counted for them."""
    import requests
    from py_vapid import Vapid
    from pywebpush import webpush

    vapid = Vapid()
    vapid.generate_keys()
    session = requests.Session()
    session.verify = cert_file
    session.trust_env = False
    before = service.count.value
    times = []
    for i, (p256dh, auth) in enumerate(keys):
        info = {"endpoint": service.endpoint(i), "keys": {"p256dh": b64(p256dh), "auth": b64(auth)}}
        started = time.perf_counter()
        webpush(
            info,
            payload,
            vapid_private_key=vapid,
            # webpush() writes aud and exp into the claims: a fresh dict each time
            vapid_claims={"sub": VAPID_SUBJECT},
            ttl=86400,
            headers={"Urgency": "normal"},
            requests_session=session,
        )
        times.append(time.perf_counter() - started)
    session.close()
    service.wait_for(before + len(keys), 10)
    return times, service.count.value - before


# -- baseline B: the encryption ceiling ----------------------------------------------


def _encrypt(payload: bytes, p256dh: bytes, auth: bytes) -> bytes:
    """RFC 8291 aes128gcm with a fresh ephemeral key, as a sender must: B and F."""
    import http_ece
    from cryptography.hazmat.primitives.asymmetric import ec

    body: bytes = http_ece.encrypt(
        payload,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=p256dh,
        auth_secret=auth,
        version="aes128gcm",
    )
    return body


def _encrypt_chunk(args: tuple[bytes, list[tuple[bytes, bytes]]]) -> int:
    payload, keys = args
    size = 0
    for p256dh, auth in keys:
        size += len(_encrypt(payload, p256dh, auth))
    return size


def _warm(_: int) -> int:
    _encrypt_chunk((b"x", []))
    return os.getpid()


def encryption_ceiling(
    pool: Any, processes: int, keys: Sequence[tuple[bytes, bytes]], payload: bytes
) -> float:
    """Seconds to encrypt ``payload`` once for every key with ``processes`` workers."""
    chunk = 500
    chunks = [(payload, list(keys[i : i + chunk])) for i in range(0, len(keys), chunk)]
    if processes == 1:
        started = time.perf_counter()
        for each in chunks:
            _encrypt_chunk(each)
        return time.perf_counter() - started
    started = time.perf_counter()
    pool.map(_encrypt_chunk, chunks, chunksize=1)
    return time.perf_counter() - started


def sample_payload() -> bytes:
    """The plaintext a push carries in the product: CONTRACT.md's JSON, about 200 bytes
    plus a click token."""
    from flask_push.message import Notification
    from flask_push.providers.webpush import _payload_json

    notification = Notification(title=TITLE, body=BODY)
    return _payload_json(notification, "msg_01JD3X9K8Q4M2V7T5R1N6B0C9A", None)


# -- the product path -----------------------------------------------------------------


def create_app(
    database_url: str, schema: str, vapid_key: str, queue: str = "thread", metrics: bool = False
) -> tuple[Flask, SQLAlchemy, Push]:
    db = SQLAlchemy()
    push = Push(db=db)
    app = Flask("flask_push_bench_fanout")
    app.config.update(
        SECRET_KEY="bench-fanout-secret",
        SQLALCHEMY_DATABASE_URI=database_url,
        SQLALCHEMY_ENGINE_OPTIONS=(
            {}
            if is_sqlite(database_url)
            else {"connect_args": {"options": f"-csearch_path={schema}"}}
        ),
        PUSH_VAPID_PRIVATE_KEY=vapid_key,
        PUSH_VAPID_SUBJECT=VAPID_SUBJECT,
        PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
        PUSH_QUEUE=queue,
        PUSH_SUPPRESS_SEND=False,
        PUSH_METRICS=metrics,
        PUSH_CATEGORIES=CATEGORIES,
    )
    db.init_app(app)
    push.init_app(app)
    return app, db, push


#: ``--policy``: the category of the second row. Its cap is high enough that nobody
#: reaches it, and the preferences loaded leave every push on, so that both rows send
#: all N and differ only by the policy's work: reading the audience's preferences and
#: the cap's counts, deciding per target, and recording each push for the cap.
CATEGORIES = {"offers": {"label": "Offers and deals", "max_per_day": 1000}}


def preference_rows(n: int, now: datetime) -> list[dict[str, Any]]:
    """Every 10th user chose offers on the web, every 7th has quiet hours that
    never cover the bench's time (in UTC, three hours ahead)."""
    start = (now + timedelta(hours=3)).strftime("%H:00")
    end = (now + timedelta(hours=4)).strftime("%H:00")
    return [
        {
            "user_id": f"user-{i:06d}",
            "categories": {"offers": {"web": True}} if i % 10 == 0 else {},
            "quiet_start": start if i % 7 == 0 else None,
            "quiet_end": end if i % 7 == 0 else None,
            "time_zone": "UTC" if i % 7 == 0 else None,
            "updated_at": now,
        }
        for i in range(n)
        if i % 10 == 0 or i % 7 == 0
    ]


def is_sqlite(database_url: str) -> bool:
    return database_url.startswith("sqlite")


def admin_engine(database_url: str, schema: str) -> sa.Engine:
    return sa.create_engine(
        database_url,
        isolation_level="AUTOCOMMIT",
        connect_args={"options": f"-csearch_path={schema}"},
    )


def drop_schema(database_url: str, schema: str) -> None:
    """Drop the benchmark's schema, with everything in it."""
    engine = admin_engine(database_url, "public")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def load_subscriptions(
    database_url: str, schema: str, vapid_key: str, service: PushService, keys: Sequence[Any]
) -> float:
    """Make the schema (PostgreSQL) or the database file (SQLite) and bulk-insert N
    subscriptions; returns the seconds it took."""
    started = time.perf_counter()
    sqlite = is_sqlite(database_url)
    engine = admin_engine(database_url, schema) if not sqlite else None
    if engine is not None:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    app, db, push = create_app(database_url, schema, vapid_key)
    with app.app_context():
        db.create_all()
        table = push.models.Subscription.__table__
        now = datetime.now(timezone.utc)
        rows = [
            {
                "id": f"sub_{i:026d}",
                "endpoint": service.endpoint(i),
                "p256dh": b64(p256dh),
                "auth": b64(auth),
                "user_id": f"user-{i:06d}",
                "status": "active",
                "topics": [],
                "created_at": now,
                "last_seen_at": now,
            }
            for i, (p256dh, auth) in enumerate(keys)
        ]
        preferences = preference_rows(len(rows), now)
        with db.engine.begin() as conn:
            for i in range(0, len(rows), 5000):
                conn.execute(sa.insert(table), rows[i : i + 5000])
            for i in range(0, len(preferences), 5000):
                conn.execute(sa.insert(push.models.Preference.__table__), preferences[i : i + 5000])
        if sqlite:
            with db.engine.connect() as conn:
                conn.execute(sa.text("ANALYZE"))
        db.engine.dispose()
    if engine is not None:
        with engine.connect() as conn:
            # the benchmark's own tables (the search path is its schema), not the
            # whole shared database
            tables = ", ".join(t.name for t in db.metadata.sorted_tables)
            conn.execute(sa.text(f"VACUUM (ANALYZE) {tables}"))
        engine.dispose()
    return time.perf_counter() - started


@dataclass
class Spec:
    """What a product child needs (picklable)."""

    database_url: str
    schema: str
    vapid_key: str
    subscribers: int
    timeout: float
    #: profile the worker thread's delivery rounds (Dispatcher.run_once) with cProfile
    profile: bool = False
    #: PUSH_METRICS on
    metrics: bool = False
    #: False: as if opentelemetry-api were not installed (flask_push.tracing turned off)
    tracing: bool = True
    #: the category the send names (``--policy``), or None
    category: str | None = None


#: the sending process's threads, by the name they start with (the rest: "other")
THREAD_ROLES = (
    ("flask-push-worker", "loop thread (sends)"),
    ("flask-push-db", "database thread"),
)


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process so far, summed by role
    (:data:`THREAD_ROLES`), from ``/proc/self/task``; empty where there is none."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    by_role: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat", encoding="ascii") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        role = next((r for prefix, r in THREAD_ROLES if thread.name.startswith(prefix)), "other")
        # utime and stime, the 14th and 15th fields of stat (the 12th and 13th after comm)
        by_role[role] = by_role.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return by_role


def _create_for(spec: Spec) -> tuple[Flask, SQLAlchemy, Push]:
    """The app of a product child, as ``spec`` says."""
    if not spec.tracing:
        from flask_push import tracing

        tracing.trace = None  # type: ignore[assignment]
        tracing.ENABLED = False
    return create_app(spec.database_url, spec.schema, spec.vapid_key, metrics=spec.metrics)


def _product_sender(
    spec: Spec,
    count: Any,
    last: Any,
    ready: Any,
    conn: mpc.Connection,
) -> None:
    """push.send(everyone=True) in a fresh process; waits for the last 201."""
    app, db, push = _create_for(spec)
    result: dict[str, Any] = {}
    profiler = cProfile.Profile() if spec.profile else None
    if profiler is not None:
        # The thread queue's worker thread runs Dispatcher.run_until_idle; cProfile
        # sees only the thread that enables it (not the dispatcher's database
        # thread), so it is enabled around each round on the worker thread.
        from flask_push.dispatch import Dispatcher

        run_until_idle = Dispatcher.run_until_idle

        def profiled(self: Dispatcher, **kwargs: Any) -> int:
            profiler.enable()
            try:
                return run_until_idle(self, **kwargs)
            finally:
                profiler.disable()

        Dispatcher.run_until_idle = profiled  # type: ignore[method-assign]
    with app.app_context():
        # a running app has a warm connection pool
        db.session.execute(sa.text("SELECT 1"))
        db.session.rollback()
        result["rss_idle"] = maxrss_mib()
        ready.wait(60)  # helper workers are up
        base = count.value
        cpu = time.process_time()
        threads_before = thread_cpu()
        started = time.monotonic()
        message = push.send(everyone=True, title=TITLE, body=BODY, category=spec.category)
        result["send_returned"] = time.monotonic() - started
        result["rss_send"] = maxrss_mib()
        message_id, result["recipients"] = message.id, message.recipient_count
        # as the end of a request does (Flask-SQLAlchemy's teardown): no transaction
        # of the sender stays open while the workers deliver
        db.session.remove()
        deadline = started + spec.timeout
        while count.value < base + spec.subscribers and time.monotonic() < deadline:
            time.sleep(0.05)  # the time comes from the service's stamp, not from here
        result["delivered"] = count.value - base
        result["elapsed"] = last.value - started
        result["rss"] = maxrss_mib()
        result["cpu"] = time.process_time() - cpu
        result["cpu_threads"] = {
            role: seconds - threads_before.get(role, 0.0) for role, seconds in thread_cpu().items()
        }
        # let the worker record the last batch, then read the outcome
        result["statuses"] = outcomes_of(push, message_id)
        push.shutdown()
        db.engine.dispose()
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(30)
        result["profile"] = out.getvalue()
    result["rss"] = max(result["rss"], maxrss_mib())
    conn.send(result)


def outcomes_of(push: Push, message_id: str) -> dict[str, int]:
    """The message's deliveries by status, once none is queued (or after 10 s): the
    outcomes are written within a fraction of a second of each answer."""
    d = push.models.Delivery
    statuses: dict[str, int] = {}
    for _ in range(200):
        statuses = dict(
            push.db.session.execute(
                sa.select(d.status, sa.func.count())
                .where(d.message_id == message_id)
                .group_by(d.status)
            ).all()
        )
        push.db.session.rollback()
        if not statuses.get("queued"):
            break
        time.sleep(0.05)
    return statuses


def _product_helper(spec: Spec, stop: Any, ready: Any, conn: mpc.Connection) -> None:
    """An extra worker process: ``push.dispatch_due()`` whenever something is due."""
    app, db, push = _create_for(spec)
    with app.app_context():
        push.dispatch_due()  # builds the dispatcher and its providers
        cpu = time.process_time()
        ready.set()
        while not stop.is_set():
            if not push.dispatch_due():
                stop.wait(0.02)
        cpu = time.process_time() - cpu
        push.shutdown()
        db.engine.dispose()
    conn.send((maxrss_mib(), cpu))


@dataclass
class ProductRun:
    elapsed: float
    send_returned: float
    delivered: int
    statuses: dict[str, int]
    rss_sender: float
    rss_idle: float
    #: peak memory when send() had returned (the outbox written, delivery under way)
    rss_send: float = 0.0
    #: CPU seconds during the fan-out: the sending process (all its threads), the
    #: extra workers (from ready to stop, idle polls included) and the push service
    cpu_sender: float = 0.0
    cpu_helpers: float = 0.0
    cpu_service: float = 0.0
    rss_helpers: list[float] = field(default_factory=list)
    profile: str | None = None
    #: the sender's CPU seconds by thread role (:func:`thread_cpu`), product runs only
    cpu_threads: dict[str, float] = field(default_factory=dict)


def product_run(spec: Spec, service: PushService, helpers: int) -> ProductRun:
    ready = SPAWN.Event()
    stop = SPAWN.Event()
    helper_procs = []
    for _ in range(helpers):
        parent, child = SPAWN.Pipe()
        proc = SPAWN.Process(target=_product_helper, args=(spec, stop, ready, child))
        proc.start()
        helper_procs.append((proc, parent))
    if not helpers:
        ready.set()
    parent, child = SPAWN.Pipe()
    service_cpu = service.cpu()
    sender = SPAWN.Process(
        target=_product_sender, args=(spec, service.count, service.last, ready, child)
    )
    sender.start()
    if not parent.poll(spec.timeout + 120):
        sender.kill()
        raise RuntimeError("the product sender did not report")
    result = parent.recv()
    service_cpu = service.cpu() - service_cpu
    sender.join(30)
    stop.set()
    rss_helpers = []
    cpu_helpers = 0.0
    for proc, pipe in helper_procs:
        if pipe.poll(60):
            rss, cpu = pipe.recv()
            rss_helpers.append(rss)
            cpu_helpers += cpu
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    return ProductRun(
        elapsed=result["elapsed"],
        send_returned=result["send_returned"],
        delivered=result["delivered"],
        statuses=result["statuses"],
        rss_sender=result["rss"],
        rss_idle=result["rss_idle"],
        rss_send=result["rss_send"],
        cpu_sender=result["cpu"],
        cpu_helpers=cpu_helpers,
        cpu_service=service_cpu,
        rss_helpers=rss_helpers,
        profile=result.get("profile"),
        cpu_threads=result.get("cpu_threads", {}),
    )


def _timed(
    send: Callable[[], Awaitable[dict[str, int]]], n: int, count: Any, last: Any
) -> tuple[float, int, float, dict[str, int], float]:
    """Run ``send()`` (which returns the statuses it saw) in a fresh event loop until
    the push service has counted ``n`` more 201s; returns (seconds to the last 201,
    pushes counted, peak MiB, statuses, CPU seconds of this process)."""

    async def main() -> tuple[float, float, int, dict[str, int]]:
        base = count.value
        cpu = time.process_time()
        started = time.monotonic()
        statuses = await send()
        deadline = time.monotonic() + 10
        while count.value < base + n and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return last.value - started, time.process_time() - cpu, count.value - base, statuses

    elapsed, cpu, delivered, statuses = asyncio.run(main())
    return float(elapsed), delivered, maxrss_mib(), statuses, cpu


def _provider_only(
    spec: Spec, cert_file: str, endpoints: list[tuple[str, str, str]], count: Any, last: Any
) -> tuple[float, int, float, dict[str, int], float]:
    """WebPushProvider.send_batch over the N targets in 500-push batches
    (the dispatcher's batch size); provider only, not the product path."""
    from flask_push.credentials import WEBPUSH
    from flask_push.message import Notification, OutgoingPush, WebPushTarget
    from flask_push.providers.webpush import WebPushProvider

    settings = WEBPUSH.normalize({"privateKey": spec.vapid_key, "subject": VAPID_SUBJECT})
    context = ssl.create_default_context(cafile=cert_file)
    notification = Notification(title=TITLE, body=BODY)

    async def send() -> dict[str, int]:
        statuses: dict[str, int] = {}
        provider = WebPushProvider.from_settings(
            settings, allow_private_hosts=["127.0.0.1"], ssl_context=context
        )
        try:
            for i in range(0, len(endpoints), 500):
                pushes = [
                    OutgoingPush(
                        str(i + j), "msg_bench", notification, WebPushTarget(e, p, a), None
                    )
                    for j, (e, p, a) in enumerate(endpoints[i : i + 500])
                ]
                for result in await provider.send_batch(pushes):
                    statuses[result.status] = statuses.get(result.status, 0) + 1
        finally:
            await provider.aclose()
        return statuses

    return _timed(send, len(endpoints), count, last)


def _provider_child(args: tuple[Any, ...], conn: mpc.Connection) -> None:
    conn.send(_provider_only(*args))


def _floor_only(
    cert_file: str,
    endpoints: list[tuple[str, bytes, bytes]],
    payload: bytes,
    count: Any,
    last: Any,
    one_record: bool = False,
) -> tuple[float, int, float, dict[str, int], float]:
    """The Python floor, no flask-push at all: encrypt (a fresh key per push, as in
    B) and POST each push on one aiohttp pool, 100 in flight, unsigned and with
    only a TTL header; what any asyncio sender of these pushes pays at the least.
    ``one_record``: encrypt with flask-push's one-record code
    (:mod:`flask_push.providers.aes128gcm`) instead of http_ece, the rest alike."""
    import aiohttp

    context = ssl.create_default_context(cafile=cert_file)
    encrypt = _encrypt
    if one_record:
        from flask_push.providers import aes128gcm

        encrypt = aes128gcm.encrypt  # same arguments: payload, p256dh, auth

    async def send() -> dict[str, int]:
        statuses: dict[str, int] = {}
        gate = asyncio.Semaphore(100)
        connector = aiohttp.TCPConnector(limit=100, ssl=context)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(endpoint: str, p256dh: bytes, auth: bytes) -> None:
                async with gate:
                    body = encrypt(payload, p256dh, auth)
                    async with session.post(endpoint, data=body, headers={"TTL": "60"}) as r:
                        await r.read()
                        key = str(r.status)
                        statuses[key] = statuses.get(key, 0) + 1

            await asyncio.gather(*(one(*e) for e in endpoints))
        return statuses

    return _timed(send, len(endpoints), count, last)


def _floor_child(args: tuple[Any, ...], conn: mpc.Connection) -> None:
    conn.send(_floor_only(*args))


def _peer_only(
    cert_file: str,
    endpoints: list[tuple[str, str, str]],
    payload: str,
    vapid_key: str,
    count: Any,
    last: Any,
) -> tuple[float, int, float, dict[str, int], float]:
    """The best Python peer: pywebpush's ``webpush_async`` on one aiohttp session,
    100 in flight, as its documentation shows it (the VAPID key given, a claims dict
    per call, which it signs), with the product's TTL and Urgency headers."""
    import aiohttp
    from py_vapid import Vapid
    from pywebpush import webpush_async

    vapid = Vapid.from_raw(vapid_key.encode())
    context = ssl.create_default_context(cafile=cert_file)

    async def send() -> dict[str, int]:
        statuses: dict[str, int] = {}
        gate = asyncio.Semaphore(100)
        connector = aiohttp.TCPConnector(limit=100, ssl=context)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(endpoint: str, p256dh: str, auth: str) -> None:
                async with gate:
                    response = await webpush_async(
                        {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}},
                        payload,
                        vapid_private_key=vapid,
                        # it writes aud and exp into the claims: a fresh dict each time
                        vapid_claims={"sub": VAPID_SUBJECT},
                        ttl=2419200,
                        headers={"Urgency": "normal"},
                        aiohttp_session=session,
                    )
                    assert not isinstance(response, str)
                    key = str(response.status)
                    statuses[key] = statuses.get(key, 0) + 1

            await asyncio.gather(*(one(*e) for e in endpoints))
        return statuses

    return _timed(send, len(endpoints), count, last)


def _peer_child(args: tuple[Any, ...], conn: mpc.Connection) -> None:
    conn.send(_peer_only(*args))


def peer_run(
    spec: Spec,
    cert_file: str,
    service: PushService,
    keys: Sequence[tuple[bytes, bytes]],
    payload: bytes,
) -> ProductRun:
    endpoints = [(service.endpoint(i), b64(p), b64(a)) for i, (p, a) in enumerate(keys)]
    args = (cert_file, endpoints, payload.decode(), spec.vapid_key, service.count, service.last)
    return _child_run(_peer_child, args, spec, service)


def provider_run(
    spec: Spec, cert_file: str, service: PushService, keys: Sequence[tuple[bytes, bytes]]
) -> ProductRun:
    endpoints = [(service.endpoint(i), b64(p), b64(a)) for i, (p, a) in enumerate(keys)]
    return _child_run(
        _provider_child, (spec, cert_file, endpoints, service.count, service.last), spec, service
    )


def floor_run(
    spec: Spec,
    cert_file: str,
    service: PushService,
    keys: Sequence[tuple[bytes, bytes]],
    payload: bytes,
    one_record: bool = False,
) -> ProductRun:
    endpoints = [(service.endpoint(i), p, a) for i, (p, a) in enumerate(keys)]
    args = (cert_file, endpoints, payload, service.count, service.last, one_record)
    return _child_run(_floor_child, args, spec, service)


def _child_run(
    target: Callable[..., None], args: tuple[Any, ...], spec: Spec, service: PushService
) -> ProductRun:
    """Run ``target(args, conn)`` in a spawned process; it reports
    (elapsed, delivered, peak MiB, statuses, CPU seconds)."""
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=target, args=(args, child))
    service_cpu = service.cpu()
    proc.start()
    if not parent.poll(spec.timeout + 120):
        proc.kill()
        raise RuntimeError(f"{target.__name__} did not report")
    elapsed, delivered, rss, statuses, cpu = parent.recv()
    service_cpu = service.cpu() - service_cpu
    proc.join(30)
    return ProductRun(
        elapsed, 0.0, delivered, statuses, rss, 0.0, cpu_sender=cpu, cpu_service=service_cpu
    )


# -- FCM and APNs against the fakes ----------------------------------------------------


def _serve_fake(kind: str, conn: mpc.Connection) -> None:
    from flask_push.testing import FakeAPNs, FakeFCM

    if kind == "fcm":
        with FakeFCM() as fcm:
            conn.send((fcm.base_url, fcm.service_account()))
            conn.recv()
            conn.send(len(fcm.messages))
    else:
        with FakeAPNs(topic=APNS_TOPIC) as apns:
            conn.send((apns.port, apns.auth_key(), apns.certificate.cert_file))
            conn.recv()
            conn.send(len(apns.notifications))


def mobile_run(kind: str, sends: int, runs: int) -> tuple[list[float], int, dict[str, int]]:
    """Seconds for ``sends`` pushes through the provider's send_batch, per run."""
    from flask_push.credentials import APNS, FCM
    from flask_push.message import DeviceTarget, Notification, OutgoingPush
    from flask_push.providers.apns import APNsProvider
    from flask_push.providers.fcm import FCMProvider
    from flask_push.testing.fcm import make_registration_token

    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=_serve_fake, args=(kind, child), daemon=True)
    proc.start()
    if not parent.poll(60):
        raise RuntimeError(f"the fake {kind} did not start")
    info = parent.recv()
    provider: FCMProvider | APNsProvider
    if kind == "fcm":
        base_url, account = info
        settings = FCM.normalize({"credentials": account, "baseUrl": base_url})
        provider = FCMProvider.from_settings(settings)
        tokens = [make_registration_token() for _ in range(sends)]
    else:
        port, (key_pem, key_id, team_id), cert_file = info
        settings = APNS.normalize(
            {
                "key": key_pem,
                "keyId": key_id,
                "teamId": team_id,
                "topic": APNS_TOPIC,
                "baseUrl": f"https://localhost:{port}",
            }
        )
        provider = APNsProvider.from_settings(
            settings, ssl_context=ssl.create_default_context(cafile=cert_file)
        )
        tokens = [f"{i:064x}" for i in range(sends)]
    notification = Notification(title=TITLE, body=BODY, badge=1, sound="default")
    pushes = [
        OutgoingPush(f"dlv_{i}", "msg_bench", notification, DeviceTarget(t))
        for i, t in enumerate(tokens)
    ]
    statuses: dict[str, int] = {}

    async def main() -> list[float]:
        times = []
        try:
            await provider.send_batch(pushes[:20])  # token and connections, untimed
            for _ in range(runs):
                started = time.perf_counter()
                results = await provider.send_batch(pushes)
                times.append(time.perf_counter() - started)
                for r in results:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
        finally:
            await provider.aclose()
        return times

    times = asyncio.run(main())
    parent.send("stop")
    received = parent.recv() if parent.poll(30) else -1
    proc.join(10)
    return times, received, statuses


# -- the report ------------------------------------------------------------------------


def print_budget(
    measured: list[tuple[str, list[ProductRun], bool]], rates: dict[str, float], n: int
) -> None:
    """Issue 15's arithmetic: the sending process's CPU per push each goal allows,
    against what C0 spends, thread by thread, and what the floors spend.

    Every sender here runs its Python one thread at a time (the GIL), so its CPU
    seconds are about its elapsed seconds and a rate is about the inverse of its
    CPU per push: a goal's rate is a budget of CPU per push."""
    runs = {label: made for label, made, _ in measured}
    c0 = runs.get(DEFAULT_LABEL)
    if not c0:
        return

    def per_push(made: list[ProductRun]) -> float:
        return statistics.median(r.cpu_sender for r in made) * 1e6 / n

    spent = per_push(c0)
    roles = sorted({role for r in c0 for role in r.cpu_threads})
    split = ", ".join(
        f"{role} {statistics.median(r.cpu_threads.get(role, 0.0) for r in c0) * 1e6 / n:.0f}"
        for role in roles
    )
    print()
    print(
        "The goals as a budget of the sending process's CPU per push (one thread at a time "
        "holds the GIL, so a rate is about the inverse of its CPU per push):"
    )
    print(f"  C0 spends {spent:.0f} us" + (f" ({split})" if split else ""))
    floors = [
        (name, per_push(runs[label]))
        for name, label in (("F", FLOOR_LABEL), ("F1", FLOOR_ONE_RECORD_LABEL))
        if runs.get(label)
    ]
    for label, goal in (
        (f"{GOAL_PEER_FACTOR:g}x P", GOAL_PEER_FACTOR * rates.get(PEER_LABEL, math.nan)),
        (f"{GOAL_FLOOR_SHARE:.0%} of F", GOAL_FLOOR_SHARE * rates.get(FLOOR_LABEL, math.nan)),
    ):
        if goal != goal:
            continue
        allowed = 1e6 / goal
        above = "; ".join(
            f"{cost - allowed:.0f} us less than {name} itself ({cost:.0f} us)"
            if allowed < cost
            else f"{allowed - cost:.0f} us for all flask-push does above {name} "
            f"({cost:.0f} us), where C0 spends {spent - cost:.0f}"
            for name, cost in floors
        )
        print(
            f"  {label} = {fmt_rate(goal)}: at most {allowed:.0f} us per push"
            + (f"; {above}" if above else "")
        )


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}/s" if rate >= 100 else f"{rate:,.1f}/s"


def fmt_time(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"


def print_table(rows: list[tuple[str, ...]], headers: tuple[str, ...]) -> None:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Web Push fan-out to N subscribers at a local HTTPS push service "
        f"({SERVICE_DELAY * 1000:g} ms per push), with its baselines; FCM and APNs against "
        "the fakes."
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--schema",
        default=DEFAULT_SCHEMA,
        help="the benchmark's own schema; must start with flask_push_bench_fanout",
    )
    parser.add_argument("--subscribers", type=int, default=20_000, help="N (default 20,000)")
    parser.add_argument(
        "--naive-sample",
        type=int,
        default=300,
        help="pushes of the naive pywebpush loop, extrapolated to N (default 300)",
    )
    parser.add_argument(
        "--ceiling-n",
        type=int,
        default=None,
        help="pushes per encryption-ceiling run (default: N, at most 20,000)",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of each fan-out and ceiling (default 3)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="extra worker processes (push.dispatch_due()) for the second product row; "
        "0 measures the default queue only (default 1)",
    )
    parser.add_argument(
        "--path",
        choices=("product", "provider", "both"),
        default="both",
        help="product: push.send(); provider: WebPushProvider.send_batch only (not the "
        "product path); both (default)",
    )
    parser.add_argument(
        "--mobile-sends", type=int, default=2000, help="FCM and APNs sends per run (default 2,000)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per fan-out run")
    parser.add_argument(
        "--key-cache",
        type=Path,
        default=DEFAULT_KEY_CACHE,
        help=f"where subscriber keys are cached between runs (default {DEFAULT_KEY_CACHE})",
    )
    parser.add_argument("--no-key-cache", action="store_true")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-mobile", action="store_true")
    parser.add_argument(
        "--only-mobile",
        action="store_true",
        help="run only the FCM and APNs part (no database, no Web Push fan-out)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the measured runs, run one more fan-out with cProfile on the thread "
        "queue's worker and print the profile",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="measure the thread-queue fan-out three ways, interleaved: without "
        "OpenTelemetry, with opentelemetry-api but no SDK, and with PUSH_METRICS too",
    )
    parser.add_argument(
        "--policy",
        action="store_true",
        help="measure the thread-queue fan-out twice, interleaved: without a category and "
        "with category='offers' (preferences read, quiet hours checked, the cap recorded)",
    )
    parser.add_argument(
        "--setup",
        choices=("default", "postgres", "both"),
        default="both",
        help="default: the product in the default setup (SQLite, thread queue, one "
        "process) against the peer and the floors (issue 15); postgres: the PostgreSQL "
        "rows; both (default)",
    )
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--keep", action="store_true", help="do not drop the schema at the end")
    args = parser.parse_args(argv)
    if not _SCHEMA_NAME.fullmatch(args.schema):
        parser.error("--schema must start with flask_push_bench_fanout (lower case)")
    if (args.metrics or args.policy) and args.setup == "default":
        parser.error("--metrics and --policy measure PostgreSQL rows: use --setup postgres or both")
    if args.subscribers < 1 or args.runs < 1 or args.naive_sample < 1:
        parser.error("--subscribers, --runs and --naive-sample must be at least 1")
    return args


def mobile_only(args: argparse.Namespace) -> int:
    """The FCM and APNs part alone: one line per kind, median of the runs."""
    for kind in ("fcm", "apns"):
        times, received, statuses = mobile_run(kind, args.mobile_sends, args.runs)
        rate = args.mobile_sends / statistics.median(times)
        print(
            f"{kind.upper()}: {fmt_rate(rate)} (median of {args.runs} x "
            f"{args.mobile_sends:,}), statuses {statuses}, fake got {received:,}",
            flush=True,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only_mobile:
        return mobile_only(args)
    started_run = time.perf_counter()
    n = args.subscribers
    print(f"flask_push {getattr(flask_push, '__version__', '?')} from {flask_push.__file__}")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, N = {n:,}")
    load_before = os.getloadavg()

    # the certificate and the SQLite file of the default setup: removed at the end
    scratch = tempfile.mkdtemp(prefix="flask-push-bench-")
    cert, vapid_key = local_credentials(scratch)

    service = start_push_service(cert.cert_file, cert.key_file)
    print(
        f"Push service: https://127.0.0.1:{service.port}/push/<id>, "
        f"201 after {SERVICE_DELAY * 1000:g} ms"
    )
    pool = None
    try:
        keys, key_seconds, cached = subscriber_keys(
            max(n, args.naive_sample), None if args.no_key_cache else args.key_cache
        )
        print(
            f"Subscriber keys: {len(keys):,} in {key_seconds:.1f} s "
            f"({'cached' if cached else 'generated'}; not in any measured path)",
            flush=True,
        )
        payload = sample_payload()
        rows: list[tuple[str, ...]] = []
        notes: list[str] = []

        # baseline A
        naive_rate = math.nan
        if not args.skip_naive:
            print(f"Naive pywebpush loop on {args.naive_sample} subscribers ...", flush=True)
            times, counted = naive_loop(
                service, cert.cert_file, keys[: args.naive_sample], payload.decode()
            )
            per_push = statistics.median(times)
            naive_rate = len(times) / sum(times)
            rows.append(
                (
                    "A naive webpush() loop (1 at a time)",
                    f"{len(times)}",
                    fmt_rate(naive_rate),
                    f"{fmt_time(n / naive_rate)} (extrapolated)",
                    f"median {per_push * 1000:.1f} ms/push",
                    "",
                )
            )
            if counted != len(times):
                notes.append(f"naive loop: the service counted {counted} of {len(times)}")

        # baseline B
        ceiling_rate = {1: math.nan, 2: math.nan}
        if not args.skip_ceiling:
            ceiling_n = min(n, 20_000) if args.ceiling_n is None else args.ceiling_n
            print(f"Encryption ceiling on {ceiling_n:,} pushes x {args.runs} ...", flush=True)
            pool = SPAWN.Pool(2)
            pool.map(_warm, range(8))
            ceiling: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.runs):
                for processes in (2, 1):
                    ceiling[processes].append(
                        encryption_ceiling(pool, processes, keys[:ceiling_n], payload)
                    )
            pool.close()
            pool.join()
            pool = None
            ceiling_rate = {p: ceiling_n / statistics.median(t) for p, t in ceiling.items()}
            for processes in (1, 2):
                rows.append(
                    (
                        f"B encryption only, {processes} process{'es' if processes > 1 else ''}",
                        f"{ceiling_n:,}",
                        fmt_rate(ceiling_rate[processes]),
                        fmt_time(n / ceiling_rate[processes]),
                        f"{len(payload)}-byte payload, aes128gcm",
                        "",
                    )
                )

        # the product path
        spec = Spec(args.database_url, args.schema, vapid_key, n, args.timeout)
        # issue 15's baselines, each in a process of its own against the same service
        baselines: dict[str, Callable[[], ProductRun]] = {
            PEER_LABEL: lambda: peer_run(spec, cert.cert_file, service, keys[:n], payload),
            FLOOR_LABEL: lambda: floor_run(spec, cert.cert_file, service, keys[:n], payload),
        }
        if importlib.util.find_spec("flask_push.providers.aes128gcm") is not None:
            # absent from a flask_push older than issue 15 (PYTHONPATH=... to compare)
            baselines[FLOOR_ONE_RECORD_LABEL] = lambda: floor_run(
                spec, cert.cert_file, service, keys[:n], payload, one_record=True
            )
        baseline_runs: dict[str, list[ProductRun]] = {label: [] for label in baselines}
        measured: list[tuple[str, list[ProductRun], bool]] = []
        if args.path in ("product", "both"):
            print(f"Loading {n:,} subscriptions into schema {args.schema} ...", flush=True)
            load_seconds = load_subscriptions(
                args.database_url, args.schema, vapid_key, service, keys[:n]
            )
            print(f"  loaded in {load_seconds:.1f} s (not measured)")
            base_label = "C push.send(everyone) thread queue, 1 process"
            variants = [(0, spec, base_label)] if args.setup != "default" else []
            if args.setup != "postgres":
                # issue 15: the setup most users run, SQLite and the thread queue in
                # the app's one process
                default_spec = replace(
                    spec, database_url=f"sqlite:///{scratch}/fanout.db", schema=""
                )
                print(f"Loading {n:,} subscriptions into SQLite ...", flush=True)
                load_subscriptions(default_spec.database_url, "", vapid_key, service, keys[:n])
                variants.insert(0, (0, default_spec, DEFAULT_LABEL))
            if args.metrics:
                # interleaved with the row above, in the same run: what metrics and
                # OpenTelemetry cost on the fan-out path
                variants = [
                    (0, replace(spec, tracing=False), base_label + ", no OpenTelemetry"),
                    (0, spec, base_label + ", opentelemetry-api without SDK"),
                    (0, replace(spec, metrics=True), base_label + ", PUSH_METRICS, otel-api"),
                ]
            if args.policy:
                # interleaved with the row above, in the same run: what the notification
                # policy costs an everyone send
                variants.append(
                    (
                        0,
                        replace(spec, category="offers"),
                        base_label + ", category='offers' (preferences, quiet hours, cap)",
                    )
                )
            if args.workers and args.setup != "default":
                variants.append(
                    (
                        args.workers,
                        spec,
                        f"C push.send(everyone) + {args.workers} worker process"
                        f"{'es' if args.workers > 1 else ''} (dispatch_due)",
                    )
                )
            runs: dict[int, list[ProductRun]] = {i: [] for i in range(len(variants))}
            for run in range(args.runs):
                if args.setup != "postgres":
                    # the baselines of issue 15, interleaved with the product's runs
                    for label, make in baselines.items():
                        print(f"  run {run + 1}/{args.runs}: {label} ...", flush=True)
                        one = make()
                        baseline_runs[label].append(one)
                        print(
                            f"    {one.delivered:,} delivered in {one.elapsed:.2f} s "
                            f"(CPU s: sender {one.cpu_sender:.1f}, "
                            f"service {one.cpu_service:.1f})",
                            flush=True,
                        )
                for i, (helpers, variant, label) in enumerate(variants):
                    print(f"  run {run + 1}/{args.runs}: {label} ...", flush=True)
                    one = product_run(variant, service, helpers)
                    runs[i].append(one)
                    print(
                        f"    {one.delivered:,} delivered in {one.elapsed:.2f} s "
                        f"(send() returned after {one.send_returned:.2f} s; "
                        f"statuses {one.statuses}; CPU s: sender {one.cpu_sender:.1f}, "
                        f"workers {one.cpu_helpers:.1f}, service {one.cpu_service:.1f})",
                        flush=True,
                    )
            for i, (_, _, label) in enumerate(variants):
                measured.append((label, runs[i], True))
            for label, made in baseline_runs.items():
                if made:  # the default setup's baselines; --setup postgres runs none here
                    measured.append((label, made, False))
            if args.profile:
                print(
                    "  profiled run: thread queue, 1 process, cProfile on the worker thread's "
                    "rounds (not in the table) ...",
                    flush=True,
                )
                profiled = Spec(args.database_url, args.schema, vapid_key, n, args.timeout, True)
                one = product_run(profiled, service, 0)
                print(f"    {one.delivered:,} delivered in {one.elapsed:.2f} s under cProfile")
                print(one.profile)
        if args.path in ("provider", "both"):
            print(f"Provider only: WebPushProvider.send_batch x {args.runs} ...", flush=True)
            provider_runs = [
                provider_run(spec, cert.cert_file, service, keys[:n]) for _ in range(args.runs)
            ]
            measured.append(
                ("D WebPushProvider.send_batch (provider only, not the product path)",
                 provider_runs, False)
            )  # fmt: skip
        if args.setup == "postgres" or args.path == "provider":
            print(f"Python floor: encrypt + bare aiohttp POST x {args.runs} ...", flush=True)
            baseline_runs[FLOOR_LABEL] = [
                floor_run(spec, cert.cert_file, service, keys[:n], payload)
                for _ in range(args.runs)
            ]
        floor_runs = baseline_runs[FLOOR_LABEL]
        if args.setup == "postgres" or args.path == "provider":
            measured.append((FLOOR_LABEL, floor_runs, False))

        goal_rows: list[tuple[str, ...]] = []
        cpu_rows: list[tuple[str, ...]] = []
        for label, product_runs, is_product in measured:
            elapsed = statistics.median(r.elapsed for r in product_runs)
            cpu = [
                statistics.median(getattr(r, f"cpu_{who}") for r in product_runs)
                for who in ("sender", "helpers", "service")
            ]
            cores = os.cpu_count() or 1
            cpu_rows.append(
                (
                    label,
                    f"{elapsed:.2f}",
                    f"{cpu[0]:.1f}",
                    f"{cpu[1]:.1f}" if cpu[1] else "-",
                    f"{cpu[2]:.1f}",
                    f"{sum(cpu) / (elapsed * cores):.0%}",
                    f"{(cpu[0] + cpu[1]) * 1e6 / n:.0f} us",
                )
            )
            delivered = min(r.delivered for r in product_runs)
            rate = n / elapsed
            rss = max(r.rss_sender for r in product_runs)
            helper_rss = max((max(r.rss_helpers) for r in product_runs if r.rss_helpers), default=0)
            memory = f"peak {rss:.0f} MiB"
            if is_product:
                idle = max(r.rss_idle for r in product_runs)
                at_send = max(r.rss_send for r in product_runs)
                memory += f" (before send {idle:.0f}, when it returned {at_send:.0f})"
            if helper_rss:
                memory += f", workers {helper_rss:.0f} MiB"
            rows.append(
                (
                    label,
                    f"{n:,}",
                    fmt_rate(rate),
                    fmt_time(elapsed),
                    memory,
                    f"{delivered:,} delivered" if delivered < n else "all delivered",
                )
            )
            naive_x = rate / naive_rate if naive_rate == naive_rate else math.nan
            share = rate / ceiling_rate[2]  # nan with --skip-ceiling
            peak = max(rss, helper_rss)
            goal_rows.append(
                (
                    label,
                    f"{naive_x:,.1f}x {verdict(naive_x >= GOAL_NAIVE_FACTOR)}"
                    if naive_x == naive_x
                    else "- (--skip-naive)",
                    f"{share:.0%} {verdict(share >= GOAL_CEILING_SHARE)}"
                    if share == share
                    else "- (--skip-ceiling)",
                    f"{peak:.0f} MiB "
                    + (
                        verdict(peak < GOAL_MEMORY_MIB)
                        if n >= GOAL_MEMORY_N
                        else f"(at N={n:,}; run --subscribers {GOAL_MEMORY_N})"
                    ),
                )
            )
            for r in product_runs:
                if r.statuses.get("sent", 0) != n and is_product:
                    notes.append(f"{label}: a run ended with statuses {r.statuses}")
                    break

        # FCM and APNs
        if not args.skip_mobile:
            for kind in ("fcm", "apns"):
                print(f"{kind.upper()} against the fake: {args.mobile_sends:,} x {args.runs} ...")
                times, received, statuses = mobile_run(kind, args.mobile_sends, args.runs)
                rate = args.mobile_sends / statistics.median(times)
                rows.append(
                    (
                        f"E {kind.upper()} provider send_batch vs the fake",
                        f"{args.mobile_sends:,}",
                        fmt_rate(rate),
                        fmt_time(n / rate),
                        f"statuses {statuses}",
                        f"fake got {received:,} (incl. 20 warm-up)",
                    )
                )

        elapsed_total = time.perf_counter() - started_run
        load_after = os.getloadavg()
        service_rss = service.stop()
        print()
        print(
            f"Web Push fan-out, N = {n:,}, push service answers after "
            f"{SERVICE_DELAY * 1000:g} ms "
            f"(medians of {args.runs} runs; time for N is measured for C and D, "
            f"extrapolated for A, B and E)"
        )
        print_table(rows, ("path", "n", "rate", f"time for N={n:,}", "detail", "check"))
        print()
        print(
            f"Goals: >= {GOAL_NAIVE_FACTOR:g}x the naive loop, >= {GOAL_CEILING_SHARE:.0%} of "
            f"the 2-process encryption ceiling ({fmt_rate(ceiling_rate[2])}), "
            f"peak memory < {GOAL_MEMORY_MIB:g} MiB at N = {GOAL_MEMORY_N:,}"
        )
        if goal_rows:
            print_table(goal_rows, ("path", "vs naive", "of ceiling", "peak memory"))
        rates = {
            label: n / statistics.median(r.elapsed for r in made) for label, made, _ in measured
        }
        if DEFAULT_LABEL in rates and PEER_LABEL in rates:
            product = rates[DEFAULT_LABEL]
            print()
            print(
                f"Issue 15, the default setup (C0, {fmt_rate(product)}): >= "
                f"{GOAL_PEER_FACTOR:g}x the peer P and >= {GOAL_FLOOR_SHARE:.0%} of the floor F, "
                "medians of runs interleaved with C0's"
            )
            print_table(
                [
                    (
                        PEER_LABEL,
                        fmt_rate(rates[PEER_LABEL]),
                        f"{product / rates[PEER_LABEL]:.2f}x "
                        + verdict(product / rates[PEER_LABEL] >= GOAL_PEER_FACTOR),
                    ),
                    (
                        FLOOR_LABEL,
                        fmt_rate(rates[FLOOR_LABEL]),
                        f"{product / rates[FLOOR_LABEL]:.0%} "
                        + verdict(product / rates[FLOOR_LABEL] >= GOAL_FLOOR_SHARE),
                    ),
                    *(
                        [
                            (
                                FLOOR_ONE_RECORD_LABEL,
                                fmt_rate(rates[FLOOR_ONE_RECORD_LABEL]),
                                f"{product / rates[FLOOR_ONE_RECORD_LABEL]:.0%} (for reference)",
                            )
                        ]
                        if FLOOR_ONE_RECORD_LABEL in rates
                        else []
                    ),
                ],
                ("baseline", "rate", "C0 / baseline"),
            )
            print()
            print(
                "CPU seconds during the fan-out (medians; PostgreSQL's own CPU not counted; "
                "busy = these CPU seconds / (elapsed x CPUs))"
            )
            print_table(
                cpu_rows,
                (
                    "path",
                    "elapsed s",
                    "sender",
                    "workers",
                    "push service",
                    "busy",
                    "sender+workers per push",
                ),
            )
            print_budget(measured, rates, n)
            floor_cpu = statistics.median((r.cpu_sender + r.cpu_service) / n for r in floor_runs)
            cores = os.cpu_count() or 1
            needs = [
                (goal, goal_rate)
                for goal, goal_rate in (
                    (f"{GOAL_NAIVE_FACTOR:g}x the naive loop", GOAL_NAIVE_FACTOR * naive_rate),
                    (
                        f"{GOAL_CEILING_SHARE:.0%} of the ceiling",
                        GOAL_CEILING_SHARE * ceiling_rate[2],
                    ),
                )
                if goal_rate == goal_rate  # nan when its baseline was skipped
            ]
            if needs:
                print()
                print(
                    f"What the rate goals need on this machine, at the floor's CPU per push "
                    f"(F: sender + push service, {floor_cpu * 1e6:.0f} us; flask-push, "
                    f"PostgreSQL and the outbox cost more on top), against {cores} CPUs:"
                )
            for goal, goal_rate in needs:
                print(
                    f"  {goal}: {fmt_rate(goal_rate)} x {floor_cpu * 1e6:.0f} us = "
                    f"{goal_rate * floor_cpu:.2f} CPUs"
                    + (" (more than the machine has)" if goal_rate * floor_cpu > cores else "")
                )
        for note in notes:
            print(f"note: {note}")
        if service_rss is not None:
            print(f"The push service process peaked at {service_rss:.0f} MiB.")
        print(f"Whole run: {elapsed_total:.0f} s.")
        print(
            f"Load average: {load_before[0]:.2f} before the run, {load_after[0]:.2f} after "
            "(the run itself keeps both cores busy)."
        )
        if load_before[0] > (os.cpu_count() or 1) - 0.5:
            print(
                f"warning: the load average was {load_before[0]:.2f} on {os.cpu_count()} CPUs "
                "when the run started: other work on the machine slows every row, the push "
                "service included, and the rates above are lower than on an idle machine"
            )
    finally:
        if pool is not None:
            pool.terminate()
        if service.process.is_alive():
            service.stop()
        if not args.keep and args.path in ("product", "both"):
            drop_schema(args.database_url, args.schema)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
