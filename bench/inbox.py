"""Benchmark of the notification inbox at a million rows on PostgreSQL.

Run ``.venv/bin/python bench/inbox.py`` (or ``make bench-inbox``); ``--help`` lists
the options. The script:

1. makes a schema of its own (``flask_push_bench``; dropped and made again on each
   run unless ``--reuse``, dropped at the end unless ``--keep``) and builds a Flask
   app the way a host does: ``db = SQLAlchemy(); push = Push(db=db)``, an
   ``identity_loader`` that reads the ``X-User`` header, a bare JSON route ``/bare``
   (the baseline) and ``/bare-db``, which runs one ``SELECT 1`` through
   ``db.session`` (for reference: the least any database-backed route pays);
2. loads about a million inbox items for ten thousand users on the server
   (``INSERT ... SELECT FROM generate_series`` with the indexes built afterwards,
   in ``created_at`` order so that one user's rows are spread over the heap as
   arrivals over time spread them), plus one heavy user with 10,000 unread items
   and another with 10,000 unread items that only mark-all-read uses, then
   ``VACUUM (ANALYZE)``;
3. times every operation with ``time.perf_counter_ns`` in two ways: in-process
   through Flask's test client, and over real HTTP on 127.0.0.1 with one
   keep-alive connection to a threaded server in a child process. Listing
   requests of all operations and both ways are interleaved in shuffled blocks,
   so a noisy neighbour slows them alike; a time budget (``--budget``) keeps the
   whole run under about five minutes on 2 cores;
4. prints n, p50 and p99 per operation, each p99 as a multiple of the bare
   route's p99, and whether the goal "listing within 3x of the bare route at
   p99" is met, for the typical and for the heavy user.

It checks that each response is what it should be, but asserts nothing about
speed: it measures and reports.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import http.client
import io
import json
import math
import os
import platform
import pstats
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import sqlalchemy as sa
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy

import flask_push
from flask_push import Push

DEFAULT_DATABASE_URL = os.environ.get(
    "PUSH_BENCH_DATABASE_URL",
    os.environ.get("PUSH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)
DEFAULT_SCHEMA = "flask_push_bench"
#: the user with 10,000 unread items whose listing is measured
HEAVY_USER = "heavy"
#: a second user with 10,000 unread items, for mark-all-read only (its updates
#: would otherwise change the heavy user's pages between listing measurements)
MARK_USER = "heavy-mark"
#: the goal this benchmark checks
GOAL_RATIO = 3.0
GOAL = f"listing within {GOAL_RATIO:g}x of the bare route at p99"


# -- the app, built as a host builds it ---------------------------------------------


def create_app(database_url: str, schema: str) -> tuple[Flask, SQLAlchemy, Push]:
    db = SQLAlchemy()
    push = Push(db=db)

    @push.identity_loader
    def identity() -> str | None:
        # a host would read its session or token; the benchmark says who it is in a header
        return request.headers.get("X-User")

    app = Flask("flask_push_bench")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"options": f"-csearch_path={schema}"}},
        # nothing is sent: no worker thread looking at the outbox beside the requests
        PUSH_QUEUE="inline",
    )
    db.init_app(app)
    push.init_app(app)

    @app.get("/bare")
    def bare() -> dict[str, Any]:
        return {"ok": True, "user": request.headers.get("X-User")}

    @app.get("/bare-db")
    def bare_db() -> dict[str, Any]:
        # for reference only: the least any route that reads the database pays
        # (a pooled connection, BEGIN, one statement, ROLLBACK at teardown)
        one = db.session.execute(sa.text("SELECT 1")).scalar()
        return {"ok": one == 1, "user": request.headers.get("X-User")}

    return app, db, push


# -- the data -----------------------------------------------------------------------

# Regular users get lo..lo+span items (lo + span/2 on average) spread over 90 days;
# the ones of the last 3 days and 5% of the older ones are unread. The heavy user has
# `heavy` unread items of the last 30 days and `heavy_read` older read ones; the
# mark-all-read user has `heavy` unread items. Rows go in in created_at order, so
# one user's items are scattered over the table as arrivals over time scatter them.
LOAD_SQL = """
WITH regular AS (
    SELECT user_id, n, created_at, kind,
           created_at > now() - interval '3 days' OR random() < 0.05 AS is_new
    FROM (
        SELECT 'user-' || lpad(u::text, 5, '0') AS user_id, n,
               now() - random() * interval '90 days' AS created_at,
               floor(random() * 5)::int AS kind
        FROM generate_series(0, :users - 1) AS u,
             generate_series(1, :lo + (u * 7919) % (:span + 1)) AS n
    ) AS r
), heavy AS (
    SELECT :heavy_user AS user_id, n,
           now() - random() * interval '30 days' AS created_at,
           floor(random() * 5)::int AS kind, true AS is_new
    FROM generate_series(1, :heavy) AS n
    UNION ALL
    SELECT :heavy_user, :heavy + n,
           now() - interval '30 days' - random() * interval '60 days',
           floor(random() * 5)::int, false
    FROM generate_series(1, :heavy_read) AS n
    UNION ALL
    SELECT :mark_user, n,
           now() - random() * interval '30 days',
           floor(random() * 5)::int, true
    FROM generate_series(1, :heavy) AS n
), items AS (
    SELECT * FROM regular UNION ALL SELECT * FROM heavy
)
INSERT INTO push_inbox_items
    (user_id, id, type, title, body, url, data, is_new, progress, created_at, updated_at)
SELECT user_id,
       'ntf_' || lpad(to_hex((extract(epoch FROM created_at) * 1000)::bigint), 12, '0')
              || upper(substr(md5(user_id || ':' || n), 1, 14)),
       (ARRAY['info', 'order.shipped', 'promo', 'security', 'export'])[kind + 1],
       (ARRAY['Welcome back', 'Your order has shipped', 'Spring sale: 20% off',
              'New sign-in to your account', 'Your export'])[kind + 1]
              || CASE WHEN kind IN (1, 4) THEN ' #' || n ELSE '' END,
       (ARRAY['Here is what changed since your last visit.',
              'Order #' || n || ' left our warehouse and is on its way. '
                  || 'Track it from your account page.',
              'Everything in the spring collection is 20% off until Sunday. '
                  || 'Use the code SPRING at checkout.',
              'We noticed a new sign-in from Firefox on Linux. '
                  || 'If this was not you, change your password now.',
              'Your data export is being prepared.'])[kind + 1],
       CASE kind WHEN 1 THEN 'https://shop.example/orders/' || n
                 WHEN 2 THEN 'https://shop.example/sale' END,
       CASE kind WHEN 1 THEN json_build_object('orderId', 'ord_' || n, 'carrier', 'DHL')
                 WHEN 3 THEN json_build_object('ip', '203.0.113.' || n % 250) END,
       is_new,
       CASE WHEN kind = 4 THEN json_build_object(
           'total', 100, 'processed', CASE WHEN is_new THEN n % 100 ELSE 100 END) END,
       created_at,
       created_at + CASE WHEN is_new THEN interval '0' ELSE interval '1 hour' END
FROM items
ORDER BY created_at
"""

COUNTERS_SQL = """
INSERT INTO push_inbox_counters (user_id, total, unread)
SELECT user_id, count(*), count(*) FILTER (WHERE is_new)
FROM push_inbox_items GROUP BY user_id
"""

_SCHEMA_NAME = re.compile(r"^flask_push_bench[a-z0-9_]*$")


def admin_engine(database_url: str, schema: str) -> sa.Engine:
    """The benchmark's own connection (not the app's), autocommit, on its schema."""
    return sa.create_engine(
        database_url,
        isolation_level="AUTOCOMMIT",
        connect_args={"options": f"-csearch_path={schema}"},
        poolclass=sa.pool.NullPool,
    )


def table_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        found = conn.scalar(sa.text("SELECT to_regclass('push_inbox_items') IS NOT NULL"))
        if not found:
            return 0
        return int(conn.scalar(sa.text("SELECT count(*) FROM push_inbox_items")) or 0)


def prepare(args: argparse.Namespace, app: Flask, db: SQLAlchemy, engine: sa.Engine) -> None:
    """Make the schema and load the items, or reuse what an earlier run left."""
    schema = args.schema
    if args.reuse and table_rows(engine) > 0:
        print(f"Reusing the data in schema {schema} (--reuse).")
        reset_marks(engine)
        started = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(sa.text("VACUUM (ANALYZE) push_inbox_items"))
        print(f"  VACUUM (ANALYZE): {time.perf_counter() - started:.1f} s")
        return
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    with app.app_context():
        db.create_all()  # the library's own tables and indexes
        db.engine.dispose()
    lo = args.items // 2
    params = {
        "users": args.users,
        "lo": lo,
        "span": 2 * (args.items - lo),
        "heavy": args.heavy,
        "heavy_read": args.heavy_read,
        "heavy_user": HEAVY_USER,
        "mark_user": MARK_USER,
    }
    table = db.metadata.tables["push_inbox_items"]
    print(f"Loading into schema {schema} ...", flush=True)
    started = time.perf_counter()
    with engine.connect() as conn:
        # Bulk load without the indexes, then build the model's own indexes and key
        # (their definitions come from the table, not from this script).
        for index in table.indexes:
            index.drop(conn)
        pkey = conn.scalar(
            sa.text(
                "SELECT conname FROM pg_constraint"
                " WHERE conrelid = 'push_inbox_items'::regclass AND contype = 'p'"
            )
        )
        conn.execute(sa.text(f'ALTER TABLE push_inbox_items DROP CONSTRAINT "{pkey}"'))
        conn.execute(sa.text("SELECT setseed(:seed)"), {"seed": (args.seed % 1000) / 1000})
        inserted = conn.execute(sa.text(LOAD_SQL), params).rowcount
        loaded = time.perf_counter()
        key = ", ".join(column.name for column in table.primary_key.columns)
        conn.execute(
            sa.text(f'ALTER TABLE push_inbox_items ADD CONSTRAINT "{pkey}" PRIMARY KEY ({key})')
        )
        for index in table.indexes:
            index.create(conn)
        # The per-user counters flask-push keeps with every write, as a host that
        # had written these items through push.upsert would have them.
        conn.execute(sa.text(COUNTERS_SQL))
        indexed = time.perf_counter()
        # VACUUM, not only ANALYZE: it sets the visibility map as autovacuum soon
        # would after a bulk load, and keeps autovacuum from starting mid-measurement
        conn.execute(sa.text("VACUUM (ANALYZE) push_inbox_items"))
        conn.execute(sa.text("VACUUM (ANALYZE) push_inbox_counters"))
    done = time.perf_counter()
    print(
        f"  INSERT ... SELECT FROM generate_series: {inserted:,} rows in "
        f"{loaded - started:.1f} s; primary key and {len(table.indexes)} indexes "
        f"{indexed - loaded:.1f} s; VACUUM (ANALYZE) {done - indexed:.1f} s; "
        f"load total {done - started:.1f} s"
    )


def describe_data(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT user_id), count(*) FILTER (WHERE is_new),"
                " pg_size_pretty(pg_table_size('push_inbox_items')),"
                " pg_size_pretty(pg_indexes_size('push_inbox_items'))"
                " FROM push_inbox_items"
            )
        ).one()
        typical = conn.execute(
            sa.text(
                "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY c),"
                " percentile_disc(0.5) WITHIN GROUP (ORDER BY u), max(c)"
                " FROM (SELECT count(*) AS c, count(*) FILTER (WHERE is_new) AS u"
                "       FROM push_inbox_items WHERE user_id LIKE 'user-%' GROUP BY user_id) AS s"
            )
        ).one()
        heavy = conn.execute(
            sa.text(
                "SELECT count(*), count(*) FILTER (WHERE is_new) FROM push_inbox_items"
                " WHERE user_id = :u"
            ),
            {"u": HEAVY_USER},
        ).one()
    print(
        f"Data: {rows[0]:,} items of {rows[1]:,} users, {rows[2]:,} unread; "
        f"table {rows[3]}, indexes {rows[4]}"
    )
    print(
        f"  typical user: median {typical[0]} items, {typical[1]} unread (max {typical[2]}); "
        f"heavy user {HEAVY_USER!r}: {heavy[0]:,} items, {heavy[1]:,} unread"
    )


def reset_marks(engine: sa.Engine) -> int:
    """Make the mark-all-read user's items unread again (not timed), then VACUUM.

    Without the VACUUM each round would leave 20,000 dead row versions of that user
    behind, in the heap and in every index, and each mark-all-read would be slower
    than the one before; autovacuum does not keep up with a loop like this one.
    """
    with engine.connect() as conn:
        result = conn.execute(
            sa.text("UPDATE push_inbox_items SET is_new = true WHERE user_id = :u AND NOT is_new"),
            {"u": MARK_USER},
        )
        conn.execute(
            sa.text("UPDATE push_inbox_counters SET unread = unread + :n WHERE user_id = :u"),
            {"u": MARK_USER, "n": result.rowcount or 0},
        )
        conn.execute(sa.text("VACUUM push_inbox_items"))
        return int(result.rowcount or 0)


def regular_users(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                sa.text(
                    "SELECT DISTINCT user_id FROM push_inbox_items WHERE user_id LIKE 'user-%'"
                    " ORDER BY user_id"
                )
            )
        )


# -- the two ways of calling the app --------------------------------------------------

Call = Callable[[str, str, str], "tuple[int, bytes]"]


class InProcess:
    """Flask's test client: the app's and the library's own cost, no sockets."""

    name = "in-process"
    detail = "Flask test client, same process (WSGI call, no sockets)"

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()

    def __call__(self, method: str, path: str, user: str) -> tuple[int, bytes]:
        if method == "POST":
            resp = self.client.post(
                path, headers={"X-User": user}, data=b"{}", content_type="application/json"
            )
        else:
            resp = self.client.get(path, headers={"X-User": user})
        return resp.status_code, resp.get_data()

    def close(self) -> None:
        pass


class OverHttp:
    """Real HTTP on 127.0.0.1: one keep-alive connection to a server in another process."""

    name = "http"
    detail = (
        "HTTP/1.1 keep-alive on 127.0.0.1 to a stdlib threaded WSGI server in a child "
        "process (not a production server; werkzeug's dev server closes every connection)"
    )

    def __init__(self, args: argparse.Namespace) -> None:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--serve",
            "--database-url",
            args.database_url,
            "--schema",
            args.schema,
        ]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.proc.kill()
            raise SystemExit(f"the HTTP server did not start: {line!r}")
        self.conn = http.client.HTTPConnection("127.0.0.1", int(line.split()[1]), timeout=60)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __call__(self, method: str, path: str, user: str) -> tuple[int, bytes]:
        headers = {"X-User": user}
        body = None
        if method == "POST":
            headers["Content-Type"] = "application/json"
            body = b"{}"
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        self.conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve(args: argparse.Namespace) -> None:
    """``--serve``: run the app behind a minimal HTTP/1.1 keep-alive server.

    Each connection gets a thread; each response is written with one ``sendall``
    and a Content-Length, on a TCP_NODELAY socket.
    """
    app, _, _ = create_app(args.database_url, args.schema)
    wsgi = app

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def handle_wsgi(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else b""
            path, _, query = self.path.partition("?")
            environ: dict[str, Any] = {
                "REQUEST_METHOD": self.command,
                "SCRIPT_NAME": "",
                "PATH_INFO": unquote(path, "latin-1"),
                "QUERY_STRING": query,
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": str(port),
                "SERVER_PROTOCOL": self.request_version,
                "REMOTE_ADDR": self.client_address[0],
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(length) if length else "",
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(data),
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
            for key, value in self.headers.items():
                name = "HTTP_" + key.upper().replace("-", "_")
                if name not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                    environ[name] = value
            started: list[Any] = []

            def start_response(
                status: str, headers: list[tuple[str, str]], exc_info: Any = None
            ) -> Callable[[bytes], None]:
                started[:] = [status, headers]
                return lambda chunk: None

            result = wsgi(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
            status, headers = started
            head = [f"HTTP/1.1 {status}\r\n"]
            head += [f"{k}: {v}\r\n" for k, v in headers if k.lower() != "content-length"]
            head.append(f"Content-Length: {len(body)}\r\n\r\n")
            self.wfile.write("".join(head).encode("latin-1") + body)

        do_GET = do_POST = handle_wsgi

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = int(server.server_address[1])  # read by handle_wsgi, set before any request
    print(f"port {port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


# -- measuring ------------------------------------------------------------------------


@dataclass
class Op:
    key: str
    label: str
    method: str
    path: str
    pick_user: Callable[[], str]
    #: checks one response body; returns an error or None
    check: Callable[[dict[str, Any]], str | None]


def percentile(samples: list[int], q: float) -> float:
    """Nearest-rank percentile of nanosecond samples, in milliseconds."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1] / 1e6


def listing_check(
    total: int | None, new: int | None, page: int | None
) -> Callable[[dict[str, Any]], str | None]:
    def check(body: dict[str, Any]) -> str | None:
        got = (body.get("totalCount"), body.get("newCount"), len(body.get("items", [])))
        want = (total, new, page)
        if any(w is not None and g != w for g, w in zip(got, want, strict=True)):
            return f"(totalCount, newCount, len(items)) = {got}, expected {want}"
        return None

    return check


def make_ops(users: list[str], rng: random.Random, heavy: int, heavy_read: int) -> list[Op]:
    def typical() -> str:
        return rng.choice(users)

    def heavy_user() -> str:
        return HEAVY_USER

    return [
        Op(
            "bare",
            "GET /bare (baseline)",
            "GET",
            "/bare",
            typical,
            lambda body: None if body.get("ok") else "not {ok: true}",
        ),
        Op(
            "bare_db",
            "GET /bare-db (SELECT 1; reference)",
            "GET",
            "/bare-db",
            typical,
            lambda body: None if body.get("ok") else "not {ok: true}",
        ),
        Op(
            "typical",
            "GET /push/notifications, typical user",
            "GET",
            "/push/notifications",
            typical,
            listing_check(None, None, 20),
        ),
        Op(
            "heavy",
            "GET /push/notifications, heavy user",
            "GET",
            "/push/notifications",
            heavy_user,
            listing_check(heavy + heavy_read, heavy, 20),
        ),
        Op(
            "heavy_new",
            "GET ...?onlyNew=true, heavy user",
            "GET",
            "/push/notifications?onlyNew=true",
            heavy_user,
            listing_check(heavy, heavy, 20),
        ),
    ]


def verify(call: Call, op: Op) -> None:
    status, data = call(op.method, op.path, op.pick_user())
    error = f"status {status}" if status != 200 else op.check(json.loads(data))
    if error:
        raise SystemExit(f"{op.label}: wrong response ({error}): {data[:300]!r}")


def measure(
    cells: list[tuple[Any, Op]], n: int, warmup: int, block: int, rng: random.Random, budget: float
) -> list[list[int]]:
    """``n`` timed requests per (transport, operation) cell, interleaved in shuffled
    blocks of ``block``, so that a noisy neighbour slows every cell alike. No new round
    starts after ``budget`` seconds: then cells have fewer samples, as the table shows."""
    for call, op in cells:
        verify(call, op)
        for _ in range(warmup):
            call(op.method, op.path, op.pick_user())
    samples: list[list[int]] = [[] for _ in cells]
    gc.collect()
    deadline = time.perf_counter() + budget
    while any(len(s) < n for s in samples) and time.perf_counter() < deadline:
        order = list(range(len(cells)))
        rng.shuffle(order)
        for index in order:
            call, op = cells[index]
            timings = samples[index]
            for _ in range(min(block, n - len(timings))):
                user = op.pick_user()
                started = time.perf_counter_ns()
                status, _ = call(op.method, op.path, user)
                timings.append(time.perf_counter_ns() - started)
                if status != 200:
                    raise SystemExit(f"{op.label}: status {status} while measuring")
    return samples


def measure_mark_all_read(
    calls: list[Any], engine: sa.Engine, reps: int, heavy: int
) -> list[list[int]]:
    """``reps`` timed mark-all-read requests per transport, taking turns; the user's
    items are made unread again (and the table vacuumed) before each one, untimed."""
    path = "/push/notifications/mark-all-read"
    timings: list[list[int]] = [[] for _ in calls]
    for rep in range(reps + 2):  # the first two rounds are warm-up
        for call, kept in zip(calls, timings, strict=True):
            reset_marks(engine)
            started = time.perf_counter_ns()
            status, data = call("POST", path, MARK_USER)
            elapsed = time.perf_counter_ns() - started
            if status != 200 or json.loads(data).get("updated") != heavy:
                raise SystemExit(
                    f"mark-all-read: status {status}, {data[:200]!r}, "
                    f"expected {{'updated': {heavy}}}"
                )
            if rep >= 2:
                kept.append(elapsed)
    reset_marks(engine)
    return timings


# -- investigating --------------------------------------------------------------------


@contextmanager
def captured_sql(db: SQLAlchemy) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def before(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        statements.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", before)


def explain(app: Flask, db: SQLAlchemy, call: Call, ops: list[Op]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement each listing issues."""
    for op in ops:
        if op.key in ("bare", "bare_db"):
            continue
        user = op.pick_user()
        with app.app_context(), captured_sql(db) as statements:
            call(op.method, op.path, user)
        print(f"\n=== {op.label} (user {user}): {len(statements)} statements")
        with app.app_context(), db.engine.connect() as conn:
            for statement, parameters in statements:
                if not statement.lstrip().upper().startswith("SELECT"):
                    continue
                print("\n" + statement.strip())
                plan = conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
                ).scalars()
                print("\n".join("    " + line for line in plan))
            conn.rollback()


def profile(call: Call, op: Op, n: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        call(op.method, op.path, op.pick_user())
    profiler.disable()
    print(f"\n=== cProfile of {n} x {op.label} (in-process), top 25 by cumulative time")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


# -- the report -----------------------------------------------------------------------


def report(results: list[tuple[str, str, list[int], str]]) -> None:
    """``results``: (transport, label, samples, key)."""
    bare = {t: percentile(s, 0.99) for t, _, s, k in results if k == "bare"}
    width = max(len(label) for _, label, _, _ in results)
    print(
        f"\n{'transport':<11} {'operation':<{width}} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p99/bare':>9}"
    )
    print("-" * (width + 48))
    for transport, label, samples, _ in results:
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(
            f"{transport:<11} {label:<{width}} {len(samples):>6} {p50:>8.2f} {p99:>8.2f} "
            f"{p99 / bare[transport]:>8.1f}x"
        )
    print(f"\nGoal: {GOAL}.")
    for transport, bare_p99 in bare.items():
        by_key = {k: percentile(s, 0.99) for t, _, s, k in results if t == transport}
        for who, keys in (
            ("typical user", ["typical"]),
            ("heavy user (first page, onlyNew)", ["heavy", "heavy_new"]),
        ):
            worst = max(by_key[k] for k in keys)
            verdict = "met" if worst <= GOAL_RATIO * bare_p99 else "NOT met"
            shown = ", ".join(f"{by_key[k]:.2f}" for k in keys)
            print(
                f"  {transport:<11} {who:<33} p99 {shown} ms vs {GOAL_RATIO:g} x "
                f"{bare_p99:.2f} = {GOAL_RATIO * bare_p99:.2f} ms: {verdict} "
                f"({worst / bare_p99:.1f}x)"
            )


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--schema",
        default=DEFAULT_SCHEMA,
        help="the benchmark's own schema; must start with flask_push_bench",
    )
    parser.add_argument("--users", type=int, default=10_000, help="regular users")
    parser.add_argument("--items", type=int, default=100, help="average items per regular user")
    parser.add_argument("--heavy", type=int, default=10_000, help="unread items of the heavy user")
    parser.add_argument(
        "--heavy-read", type=int, default=2_000, help="older, read items of the heavy user"
    )
    parser.add_argument(
        "--budget", type=float, default=160, help="seconds of timed listing requests, at most"
    )
    parser.add_argument(
        "--requests", type=int, default=2000, help="timed requests per operation and transport"
    )
    parser.add_argument("--warmup", type=int, default=100, help="untimed requests per operation")
    parser.add_argument(
        "--block", type=int, default=100, help="requests of one operation in a row before switching"
    )
    parser.add_argument(
        "--mark-requests", type=int, default=30, help="timed mark-all-read requests per transport"
    )
    parser.add_argument("--transport", choices=["both", "in-process", "http"], default="both")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the data of an earlier --keep run instead of loading again",
    )
    parser.add_argument("--keep", action="store_true", help="do not drop the schema at the end")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print EXPLAIN (ANALYZE, BUFFERS) of each listing's statements",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="cProfile N in-process heavy-user listings",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not _SCHEMA_NAME.match(args.schema):
        parser.error("--schema must match flask_push_bench[a-z0-9_]*: it is dropped at the end")
    if args.items < 2 or args.users < 1 or args.heavy < 100 or args.requests < 1:
        parser.error("--users >= 1, --items >= 2, --heavy >= 100 and --requests >= 1, please")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve:
        serve(args)
        return
    began = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    engine = admin_engine(args.database_url, args.schema)
    with engine.connect() as conn:
        server_version = conn.scalar(sa.text("SHOW server_version"))
        shared_buffers = conn.scalar(sa.text("SHOW shared_buffers"))
    print(
        f"flask-push inbox benchmark: Python {platform.python_version()}, "
        f"PostgreSQL {server_version} (shared_buffers {shared_buffers}), "
        f"{os.cpu_count()} CPUs, load average {loadavg()}"
    )
    print(f"flask_push from {os.path.dirname(flask_push.__file__)}")
    app, db, _ = create_app(args.database_url, args.schema)
    try:
        prepare(args, app, db, engine)
        describe_data(engine)
        users = regular_users(engine)
        rng = random.Random(args.seed)
        ops = make_ops(users, rng, args.heavy, args.heavy_read)
        transports: list[Any] = []
        if args.transport in ("both", "in-process"):
            transports.append(InProcess(app))
        if args.transport in ("both", "http"):
            transports.append(OverHttp(args))
        results: list[tuple[str, str, list[int], str]] = []
        try:
            for call in transports:
                print(f"  {call.name}: {call.detail}")
            print(
                f"Measuring {len(ops)} operations x {len(transports)} transports: "
                f"{args.requests} requests each after {args.warmup} warm-up, interleaved in "
                f"shuffled blocks of {args.block}, {args.budget:g} s at most ...",
                flush=True,
            )
            started = time.perf_counter()
            cells = [(call, op) for call in transports for op in ops]
            samples = measure(cells, args.requests, args.warmup, args.block, rng, args.budget)
            results += [
                (call.name, op.label, timings, op.key)
                for (call, op), timings in zip(cells, samples, strict=True)
            ]
            print(f"  {time.perf_counter() - started:.0f} s", flush=True)
            if args.explain:
                explain(app, db, InProcess(app), ops)
            if args.profile:
                profile(InProcess(app), next(op for op in ops if op.key == "heavy"), args.profile)
            # last, so that its updates cannot change the pages the listings read
            print(
                f"Measuring mark-all-read: {args.mark_requests} per transport, the user's "
                f"items made unread again and the table vacuumed before each (not timed) ...",
                flush=True,
            )
            started = time.perf_counter()
            label = f"POST .../mark-all-read, {args.heavy:,} unread"
            marks = measure_mark_all_read(transports, engine, args.mark_requests, args.heavy)
            results += [
                (call.name, label, timings, "mark")
                for call, timings in zip(transports, marks, strict=True)
            ]
            print(f"  {time.perf_counter() - started:.0f} s", flush=True)
        finally:
            for call in transports:
                call.close()
        order = {"bare": 0, "bare_db": 1, "typical": 2, "heavy": 3, "heavy_new": 4, "mark": 5}
        results.sort(key=lambda r: ([t.name for t in transports].index(r[0]), order[r[3]]))
        report(results)
        busy = max(os.getloadavg()[0], load_at_start)
        if busy > (os.cpu_count() or 1) - 0.5:
            print(
                f"\nWARNING: the machine was busy (1-minute load average up to {busy:.1f} on "
                f"{os.cpu_count()} CPUs): the p99 values include waiting for a CPU, which "
                f"hurts long requests more than the short bare one. Run again when quieter "
                f"for the library's own tail."
            )
        print(
            f"\nNotes: p99 of {args.mark_requests} mark-all-read requests is their maximum. "
            f"The heavy user's listings read the same rows every time, so they run on a warm "
            f"cache; typical users are drawn at random from {len(users):,}. Load average at "
            f"the end: {loadavg()}. Total time {time.perf_counter() - began:.0f} s."
        )
    finally:
        with app.app_context():
            db.engine.dispose()
        if not args.keep:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE'))
            print(f"Dropped schema {args.schema} (pass --keep to keep it).")
        engine.dispose()


if __name__ == "__main__":
    main()
