"""Benchmark of ``POST /subscriptions`` (a browser registering) on SQLite and PostgreSQL.

Run ``.venv/bin/python bench/registration.py`` (or ``make bench-registration``);
``--help`` lists the options. The script:

1. builds one app per database the way a host does (``db = SQLAlchemy();
   push = Push(db=db)``, an ``identity_loader`` that reads ``X-User``, no subscribe
   rate limit) with two baseline routes: ``POST /bare``, which parses the JSON body
   and answers JSON without touching the database, and ``POST /bare-insert``, which
   also INSERTs the same row into ``push_subscriptions`` through ``db.session`` and
   commits (what a route that writes one row pays at the least when written the
   plain way);
2. checks each operation's answers and counts, in an untimed pass, its statements
   per request (SQLAlchemy's ``before_cursor_execute``) and, on PostgreSQL, its
   round trips on the wire (libpq's protocol trace: one ``ReadyForQuery`` per
   exchange, so BEGIN, COMMIT and the pool's ROLLBACK count too);
3. times every request with ``time.perf_counter_ns`` in-process, through Flask's
   test client: ``/bare``, ``/bare-insert``, a new subscription (201) and the same
   browser registering again (200), the cells of both databases interleaved in
   shuffled blocks so that a noisy neighbour slows them alike;
4. prints n, the median and p90, the rate (requests a second at the median), the
   median CPU time of the benchmark's process per request (the app's Python; the
   database server's CPU is not in it), the median as a multiple of ``/bare`` and
   of ``/bare-insert``, and the statements and round trips per request.

It asserts nothing about speed: it measures and reports.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import math
import os
import platform
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from inbox import loadavg

import flask_push
from flask_push import Push
from flask_push.credentials import vapid_raw_private_key
from flask_push.ids import new_id

# the statement and round-trip counter of the tests, one piece for both
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgtrace import Trips, counted  # noqa: E402

DEFAULT_DATABASE_URL = os.environ.get(
    "PUSH_BENCH_DATABASE_URL",
    os.environ.get("PUSH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)
DEFAULT_SCHEMA = "flask_push_bench_registration"
_SCHEMA_NAME = re.compile(r"^flask_push_bench_registration[a-z0-9_]*$")
ENDPOINT = "https://fcm.googleapis.com/fcm/send/"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def browser_keys() -> dict[str, str]:
    """One browser's keys (a P-256 point and a 16-byte secret), as the browser makes them."""
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {"p256dh": b64url(point), "auth": b64url(os.urandom(16))}


def vapid_key() -> str:
    from py_vapid import Vapid

    vapid = Vapid()
    vapid.generate_keys()
    return vapid_raw_private_key(vapid)


# -- the app, built as a host builds it ---------------------------------------------


def create_app(config: dict[str, Any], vapid: str) -> tuple[Flask, SQLAlchemy]:
    db = SQLAlchemy()
    push = Push(db=db)

    @push.identity_loader
    def identity() -> str | None:
        # a host would read its session or token; the benchmark says who it is in a header
        return request.headers.get("X-User")

    app = Flask("flask_push_bench_registration")
    app.config.update(
        PUSH_VAPID_PRIVATE_KEY=vapid,
        PUSH_VAPID_SUBJECT="mailto:ops@shop.example",
        # a browser subscribes once; the benchmark is one client making thousands
        PUSH_SUBSCRIBE_RATE_LIMIT=None,
        # nothing is sent: no worker thread (the thread queue's would start on the first
        # request, and its look at the outbox every second would count among the
        # requests' statements)
        PUSH_QUEUE="inline",
        **config,
    )
    db.init_app(app)
    push.init_app(app)
    table = push.models.Subscription.__table__

    @app.post("/bare")
    def bare() -> dict[str, Any]:
        body = request.get_json()
        return {"ok": True, "endpoint": body["endpoint"], "user": request.headers.get("X-User")}

    @app.post("/bare-insert")
    def bare_insert() -> dict[str, Any]:
        # the same row POST /push/subscriptions stores, without its checks: one INSERT
        # through the session, then COMMIT
        body = request.get_json()
        now = flask_push.models.utcnow()
        row = {
            "id": new_id("sub"),
            "endpoint": body["endpoint"],
            "p256dh": body["keys"]["p256dh"],
            "auth": body["keys"]["auth"],
            "user_id": request.headers.get("X-User"),
            "user_agent": request.user_agent.string[:512] or None,
            "topics": body.get("topics") or [],
            "status": "active",
            "created_at": now,
            "last_seen_at": now,
        }
        db.session.execute(sa.insert(table).values(row))
        db.session.commit()
        return {"ok": True, "id": row["id"]}

    with app.app_context():
        db.create_all()
    return app, db


# -- the operations -----------------------------------------------------------------------


@dataclass
class Op:
    key: str
    label: str
    path: str
    status: int
    #: the next request's (body, user)
    next: Callable[[], tuple[bytes, str]]


@dataclass
class Cell:
    database: str
    app: Flask
    engine: sa.Engine
    op: Op
    client: Any = None
    samples: list[int] = field(default_factory=list)
    #: this process's CPU time of each timed request (the database server's is not in it)
    cpu: list[int] = field(default_factory=list)
    count: Trips = field(default_factory=Trips)
    checked: int = 0

    def call(self) -> tuple[int, bytes]:
        body, user = self.op.next()
        response = self.client.post(
            self.op.path,
            data=body,
            content_type="application/json",
            headers={"X-User": user, "User-Agent": "Mozilla/5.0 (bench) Firefox/140.0"},
        )
        return response.status_code, response.get_data()


def make_ops(database: str, keys: dict[str, str], again: int) -> list[Op]:
    """The operations of one database; endpoints never repeat across databases or runs."""
    run = uuid.uuid4().hex[:8]
    counter = iter(range(10**9))
    topics = ["offers", "orders"]

    def fresh() -> tuple[bytes, str]:
        i = next(counter)
        body = {"endpoint": f"{ENDPOINT}{database}-{run}-{i}", "keys": keys, "topics": topics}
        return json.dumps(body).encode(), f"user-{i % 1000}"

    # the same browsers again and again: registered once before the checks, then cycled
    known = [
        (
            json.dumps(
                {"endpoint": f"{ENDPOINT}{database}-{run}-known-{i}", "keys": keys}
            ).encode(),
            f"user-{i}",
        )
        for i in range(again)
    ]
    cycle = iter(range(10**9))

    def known_again() -> tuple[bytes, str]:
        return known[next(cycle) % len(known)]

    return [
        Op("bare", "POST /bare (no database)", "/bare", 200, fresh),
        Op("insert", "POST /bare-insert (INSERT + COMMIT)", "/bare-insert", 200, fresh),
        Op("new", "POST /push/subscriptions, new", "/push/subscriptions", 201, fresh),
        Op(
            "again",
            "POST /push/subscriptions, same browser",
            "/push/subscriptions",
            200,
            known_again,
        ),
    ]


def check_and_count(cell: Cell, n: int) -> None:
    """``n`` untimed requests: their answers, and the statements and round trips."""
    # no app context around the requests: each pushes its own and tears it down (the
    # session ends, the connection goes back to the pool), as in production
    with counted(cell.engine) as count:
        for _ in range(n):
            status, data = cell.call()
            if status != cell.op.status:
                raise SystemExit(
                    f"{cell.database} {cell.op.label}: status {status}, expected "
                    f"{cell.op.status}: {data[:300]!r}"
                )
    cell.count = count
    cell.checked = n


def measure(cells: list[Cell], n: int, warmup: int, block: int, rng: random.Random) -> None:
    """``n`` timed requests per cell after ``warmup``, interleaved in shuffled blocks."""
    for cell in cells:
        for _ in range(warmup):
            cell.call()
    gc.collect()
    while any(len(cell.samples) < n for cell in cells):
        order = list(cells)
        rng.shuffle(order)
        for cell in order:
            for _ in range(min(block, n - len(cell.samples))):
                cpu = time.process_time_ns()
                started = time.perf_counter_ns()
                status, _ = cell.call()
                cell.samples.append(time.perf_counter_ns() - started)
                cell.cpu.append(time.process_time_ns() - cpu)
                if status != cell.op.status:
                    raise SystemExit(f"{cell.database} {cell.op.label}: status {status}")


def percentile(samples: list[int], q: float) -> float:
    """Nearest-rank percentile of nanosecond samples, in microseconds."""
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] / 1e3


def report(cells: list[Cell]) -> None:
    width = max(len(cell.op.label) for cell in cells)
    head = (
        f"{'database':<10} {'operation':<{width}} {'n':>5} {'median us':>10} {'p90 us':>8} "
        f"{'req/s':>7} {'cpu us':>7} {'x bare':>7} {'x insert':>9} {'stmts/req':>10} "
        f"{'trips/req':>10}"
    )
    print("\n" + head)
    print("-" * len(head))
    for cell in cells:
        base = {c.op.key: percentile(c.samples, 0.5) for c in cells if c.database == cell.database}
        median = percentile(cell.samples, 0.5)
        trips = (
            f"{cell.count.round_trips / cell.checked:.2f}" if cell.database == "postgresql" else "-"
        )
        print(
            f"{cell.database:<10} {cell.op.label:<{width}} {len(cell.samples):>5} "
            f"{median:>10.0f} {percentile(cell.samples, 0.9):>8.0f} {1e6 / median:>7.0f} "
            f"{percentile(cell.cpu, 0.5):>7.0f} "
            f"{median / base['bare']:>6.2f}x {median / base['insert']:>8.2f}x "
            f"{len(cell.count.statements) / cell.checked:>10.2f} {trips:>10}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["both", "sqlite", "postgresql"], default="both")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--schema",
        default=DEFAULT_SCHEMA,
        help="the benchmark's own PostgreSQL schema, made again and dropped at the end; "
        "must start with flask_push_bench_registration",
    )
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per cell")
    parser.add_argument("--warmup", type=int, default=100, help="untimed requests per cell")
    parser.add_argument("--check", type=int, default=50, help="counted requests per cell")
    parser.add_argument(
        "--block", type=int, default=100, help="requests of one cell in a row before switching"
    )
    parser.add_argument(
        "--browsers", type=int, default=200, help="known browsers the re-registrations cycle over"
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if not _SCHEMA_NAME.match(args.schema):
        parser.error("--schema must start with flask_push_bench_registration: it is dropped")
    if min(args.requests, args.check, args.block, args.browsers) < 1 or args.warmup < 0:
        parser.error("--requests, --check, --block and --browsers >= 1, --warmup >= 0, please")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    print(
        f"flask-push registration benchmark: Python {platform.python_version()}, SQLAlchemy "
        f"{sa.__version__}, {os.cpu_count()} CPUs, load average {loadavg()}"
    )
    print(f"flask_push from {os.path.dirname(flask_push.__file__)}")
    vapid = vapid_key()
    keys = browser_keys()  # one browser's keys for every request: making keys is not timed
    scratch = tempfile.TemporaryDirectory(prefix="flask-push-bench-")
    admin: sa.Engine | None = None
    databases: list[tuple[str, dict[str, Any]]] = []
    if args.database in ("both", "sqlite"):
        path = Path(scratch.name) / "bench.db"
        databases.append(("sqlite", {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}"}))
    if args.database in ("both", "postgresql"):
        admin = sa.create_engine(
            args.database_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE'))
            conn.execute(sa.text(f'CREATE SCHEMA "{args.schema}"'))
            version = conn.scalar(sa.text("SHOW server_version"))
            commit = conn.scalar(sa.text("SHOW synchronous_commit"))
        print(f"PostgreSQL {version} (synchronous_commit {commit}), schema {args.schema}")
        options = {"connect_args": {"options": f"-csearch_path={args.schema}"}}
        databases.append(
            (
                "postgresql",
                {
                    "SQLALCHEMY_DATABASE_URI": args.database_url,
                    "SQLALCHEMY_ENGINE_OPTIONS": options,
                },
            )
        )
    apps: list[tuple[Flask, SQLAlchemy]] = []
    try:
        cells: list[Cell] = []
        for name, config in databases:
            app, db = create_app(config, vapid)
            apps.append((app, db))
            with app.app_context():
                engine = db.engine
            client = app.test_client()
            for op in make_ops(name, keys, args.browsers):
                cells.append(Cell(name, app, engine, op, client))
            again = cells[-1]
            for _ in range(args.browsers):  # register the known browsers once
                body, user = again.op.next()
                response = client.post(
                    "/push/subscriptions",
                    data=body,
                    headers={"X-User": user},
                    content_type="application/json",
                )
                assert response.status_code == 201, response.get_data()
        if any(c.database == "sqlite" for c in cells):
            print(f"SQLite {sqlite3.sqlite_version}, a file in a temporary directory")
        print(
            f"Checking and counting {args.check} requests per cell, then timing "
            f"{args.requests} per cell after {args.warmup} warm-up, in shuffled blocks of "
            f"{args.block}, in-process (Flask's test client) ...",
            flush=True,
        )
        for cell in cells:
            check_and_count(cell, args.check)
        started = time.perf_counter()
        measure(cells, args.requests, args.warmup, args.block, random.Random(args.seed))
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
        report(cells)
        print(
            "\nreq/s is 1 / median (one client, one request at a time); x bare and x insert "
            "are medians over the median of /bare and /bare-insert on the same database. "
            "Round trips (PostgreSQL) from libpq's trace; on SQLite BEGIN and COMMIT are calls "
            f"into the library, not round trips. Load average at the end: {loadavg()}. "
            f"Total time {time.perf_counter() - began:.0f} s."
        )
    finally:
        for app, db in apps:
            with app.app_context():
                db.engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE'))
            admin.dispose()
        scratch.cleanup()


if __name__ == "__main__":
    main()
