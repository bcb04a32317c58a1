"""Benchmark of the outbox's database work per push, alone, in SQLite.

Run ``.venv/bin/python bench/outbox.py``; ``--help`` lists the options.

In a fan-out the dispatcher's database thread claims a batch of due deliveries,
loads what sending them needs (claim and load, one transaction), and later writes
each outcome with its timeline (one executemany UPDATE). This script runs that
work on one thread, for N deliveries of one message to N Web Push subscriptions,
with nothing sent (every push "accepted" at once), so that it can be measured
apart from the sending and from the GIL's hand-offs between the two threads:

- **flask-push**: the dispatcher's own ``_claim_and_load`` and ``_write``
  (SQLAlchemy Core, the outcome's timeline, the click token, the pushes built);
- **raw sqlite3**, the baseline: the same three statements through the ``sqlite3``
  module, with the JSON of the timeline decoded and encoded again, and nothing
  else: what any Python code pays for this SQL in SQLite.

Each row is the thread's CPU per push, the median of ``--runs`` runs, on a fresh
database each run. Issue 15's budget (``fanout.py``) compares flask-push's total to
what is left above the floor once the encryption and the POST are paid.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

sys.path.insert(0, str(Path(__file__).parent))

import fanout  # noqa: E402 - the fan-out benchmark's app, keys and subscriptions

from flask_push import Push  # noqa: E402
from flask_push.dispatch import Dispatcher, _Writes  # noqa: E402
from flask_push.message import DeliveryResult  # noqa: E402
from flask_push.models import utcnow  # noqa: E402

BATCH = 100
#: where the subscriptions point, and the push service ids of the answers: nothing
#: is sent, so nothing listens
ORIGIN = "https://127.0.0.1:9"


class _Endpoints:
    """The subscriptions' endpoints, for ``fanout.load_subscriptions``."""

    def endpoint(self, i: int) -> str:
        return f"{ORIGIN}/push/{i}"


def due_fan_out(
    database: Path, keys: Sequence[tuple[bytes, bytes]], vapid_key: str
) -> tuple[Flask, SQLAlchemy, Push]:
    """A database with one message due to every one of ``keys``' subscriptions;
    returns the app's (app, db, push). The inline queue sends nothing before the
    message is due, and nothing after: only this script delivers."""
    url = f"sqlite:///{database}"
    # only its endpoint() is used
    endpoints = cast(fanout.PushService, _Endpoints())
    fanout.load_subscriptions(url, "", vapid_key, endpoints, keys)
    app, db, push = fanout.create_app(url, "", vapid_key, queue="inline")
    with app.app_context():
        later = utcnow() + timedelta(hours=1)
        push.send(everyone=True, title=fanout.TITLE, body=fanout.BODY, send_at=later)
        due = utcnow() - timedelta(seconds=1)
        db.session.execute(sa.update(push.models.Delivery).values(due_at=due))
        db.session.commit()
    return app, db, push


def _accepted(delivery_id: str) -> DeliveryResult:
    return DeliveryResult(
        delivery_id,
        "sent",
        "webpush",
        status_code=201,
        service_id=f"{ORIGIN}/m/{delivery_id}",
    )


#: (claim-and-load CPU seconds, write CPU seconds, deliveries claimed, count by status)
Run = tuple[float, float, int, dict[str, int]]


def flask_push_run(database: Path, keys: Sequence[tuple[bytes, bytes]], vapid_key: str) -> Run:
    """(claim-and-load CPU, write CPU, deliveries, statuses) through the dispatcher."""
    app, db, push = due_fan_out(database, keys, vapid_key)
    with app.app_context():
        dispatcher = Dispatcher(app, push.models, db.engine, push.settings)
        claim_cpu = write_cpu = 0.0
        done = 0
        try:
            while True:
                began = time.thread_time()
                claim = dispatcher._claim_and_load(None, BATCH)
                claim_cpu += time.thread_time() - began
                if not claim.claimed:
                    break
                writes = _Writes(results=[(p, _accepted(p.delivery_id)) for _, p in claim.pushes])
                began = time.thread_time()
                dispatcher._write(writes, claim.attempts, claim.events)
                write_cpu += time.thread_time() - began
                done += claim.claimed
        finally:
            dispatcher.close()
        d = push.models.Delivery
        counted = sa.select(d.status, sa.func.count()).group_by(d.status)
        statuses: dict[str, int] = dict(db.session.execute(counted).tuples().all())
        db.engine.dispose()
    return claim_cpu, write_cpu, done, statuses


_CLAIM = """
UPDATE push_deliveries SET lease_until = ?, attempts = attempts + 1, updated_at = ?
FROM (
    SELECT candidate.id AS id FROM push_deliveries AS candidate
    WHERE candidate.status = 'queued' AND candidate.due_at <= ?
      AND (candidate.lease_until IS NULL OR candidate.lease_until < ?)
    ORDER BY candidate.due_at LIMIT ?
) AS picked
WHERE push_deliveries.id = picked.id
RETURNING push_deliveries.id
"""
_LOAD = """
SELECT d.id, d.message_id, d.expires_at, m.notification, s.endpoint, s.p256dh, s.auth,
       s.status, d.events
FROM push_deliveries AS d
LEFT OUTER JOIN push_messages AS m ON m.id = d.message_id
LEFT OUTER JOIN push_subscriptions AS s ON s.id = d.subscription_id
WHERE d.id IN ({})
"""
_WRITE = """
UPDATE push_deliveries SET status = 'sent', error = NULL, lease_until = NULL,
    updated_at = ?, events = ?, reason = 'accepted', sent_at = ?, service_id = ?
WHERE push_deliveries.id = ? AND push_deliveries.status IN ('queued', 'cancelled')
"""


def _stored(moment: datetime) -> str:
    """A time as SQLAlchemy's SQLite DATETIME stores it (UTC, naive)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def raw_run(database: Path, keys: Sequence[tuple[bytes, bytes]], vapid_key: str) -> Run:
    """(claim-and-load CPU, write CPU, deliveries, statuses) through sqlite3 alone."""
    app, db, _ = due_fan_out(database, keys, vapid_key)
    with app.app_context():
        db.engine.dispose()  # the app's connections: only sqlite3's below
    con = sqlite3.connect(database, isolation_level=None)
    claim_cpu = write_cpu = 0.0
    done = 0
    while True:
        began = time.thread_time()
        now = utcnow()
        at = _stored(now)
        con.execute("BEGIN")
        claim = (_stored(now + timedelta(seconds=60)), at, at, at, BATCH)
        ids = sorted(row[0] for row in con.execute(_CLAIM, claim))
        rows = con.execute(_LOAD.format(",".join("?" * len(ids))), ids).fetchall() if ids else []
        notifications: dict[str, object] = {}
        timelines = []
        for id, message_id, expires_at, notification, *_target, events in rows:
            if message_id not in notifications:
                notifications[message_id] = json.loads(notification)
            datetime.fromisoformat(expires_at)
            timelines.append((id, json.loads(events) if events else []))
        con.execute("COMMIT")
        claim_cpu += time.thread_time() - began
        if not ids:
            break
        began = time.thread_time()
        now = utcnow()
        at, stamp = _stored(now), now.isoformat()
        outcomes = []
        for id, events in timelines:
            service_id = f"{ORIGIN}/m/{id}"
            attempt = {
                "at": stamp,
                "what": "attempt",
                "detail": "Attempt 1: the push service accepted it (201).",
                "statusCode": 201,
                "serviceId": service_id,
            }
            outcomes.append((at, json.dumps([*events, attempt]), at, service_id, id))
        con.execute("BEGIN")
        con.executemany(_WRITE, outcomes)
        con.execute("COMMIT")
        write_cpu += time.thread_time() - began
        done += len(ids)
    statuses: dict[str, int] = dict(
        con.execute("SELECT status, count(*) FROM push_deliveries GROUP BY status")
    )
    con.close()
    return claim_cpu, write_cpu, done, statuses


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=20_000, help="N (default 20,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each row (default 3)")
    args = parser.parse_args(argv)
    n = args.subscribers
    scratch = tempfile.TemporaryDirectory(prefix="flask-push-bench-")  # removed at the end
    _, vapid_key = fanout.local_credentials(scratch.name)
    keys, _, _ = fanout.subscriber_keys(n, fanout.DEFAULT_KEY_CACHE)
    rows = {"flask-push dispatcher (SQLAlchemy)": flask_push_run, "raw sqlite3": raw_run}
    measured: dict[str, list[tuple[float, float]]] = {label: [] for label in rows}
    print(f"Outbox work for N = {n:,} deliveries in SQLite, {args.runs} runs, interleaved ...")
    for run in range(args.runs):
        for label, measure in rows.items():
            with tempfile.TemporaryDirectory(prefix="flask-push-bench-") as folder:
                database = Path(folder) / "outbox.db"
                claim_cpu, write_cpu, done, statuses = measure(database, keys[:n], vapid_key)
            if done != n or statuses != {"sent": n}:
                raise SystemExit(f"{label}: {done} claimed, statuses {statuses}, not {n} sent")
            measured[label].append((claim_cpu * 1e6 / n, write_cpu * 1e6 / n))
            print(f"  run {run + 1}: {label}: {claim_cpu + write_cpu:.2f} s CPU", flush=True)
    baseline = statistics.median(sum(r) for r in measured["raw sqlite3"])
    table: list[tuple[str, ...]] = []
    for label, made in measured.items():
        claim = statistics.median(r[0] for r in made)
        write = statistics.median(r[1] for r in made)
        total = statistics.median(sum(r) for r in made)
        cells = (f"{claim:.0f} us", f"{write:.0f} us", f"{total:.0f} us")
        table.append((label, *cells, f"{total / baseline:.2f}x"))
    print()
    fanout.print_table(table, ("row", "claim+load", "write", "total", "x raw"))
    print("(the thread's CPU per push, medians; every row ends with all N sent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
