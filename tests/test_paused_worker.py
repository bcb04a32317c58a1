"""A worker paused past its lease sends nothing that another worker took meanwhile.

Real worker processes (``flask push worker``) deliver to a local push service.
The first is stopped (SIGSTOP: a frozen VM, a long stall) with a lane's worth of
pushes on the network and the rest claimed and waiting for a slot; its lease runs
out, and a second worker claims every row and sends it. Once the first goes on
(SIGCONT), it must leave those rows to the second: nobody gets the push twice,
and the second's outcomes stand. When nobody took them, they are still its own,
and it sends them.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from test_sigkill import LANE, LEASE, add_browsers, sending_config, start_worker

from flask_push.models import utcnow

from conftest import db, push, wait_until

#: a lane's worth on the network, and the rest waiting for a slot
SUBSCRIBERS = LANE + 30


def outside_transactions(engine: sa.Engine, name: str) -> bool:
    """Whether no connection of the workers named ``name`` is inside a transaction.

    On PostgreSQL, by their ``application_name``; on SQLite, whether the whole
    file can be locked at once (a worker reading or writing holds a lock on it)."""
    if engine.dialect.name == "sqlite":
        # a connection of its own, which does not wait for a lock
        conn = sqlite3.connect(str(engine.url.database), timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
        return True
    busy = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND state <> 'idle'"
    )
    with engine.connect() as conn:
        return not conn.execute(busy, {"name": name}).scalar()


def stop_between_transactions(
    worker: subprocess.Popen[bytes], engine: sa.Engine, name: str
) -> None:
    """SIGSTOP ``worker`` at a moment when none of its connections is inside a
    transaction (a lease renewal, say): rows it had locked would stay locked (and
    another worker's claim skips locked rows), and SQLite's file would stay locked."""
    for _ in range(100):
        worker.send_signal(signal.SIGSTOP)
        if outside_transactions(engine, name):
            return
        worker.send_signal(signal.SIGCONT)
    raise AssertionError("the worker was always inside a transaction")


@dataclass
class Paused:
    """A first worker, stopped past its lease with pushes claimed and unsent."""

    first: subprocess.Popen[bytes]
    engine: sa.Engine
    tmp_path: Path
    config: dict[str, Any]

    def rows(self) -> list[Any]:
        d = push.models.Delivery
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(d.status, d.attempts, d.lease_until)))

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text()


@contextmanager
def paused_worker(
    make_app: Callable[..., Flask], database: dict[str, Any], tmp_path: Path, service: Any
) -> Iterator[Paused]:
    """Send to everyone; a worker claims it all, a lane's worth goes on the network
    and is held unanswered, and the worker is stopped (SIGSTOP) while the rest wait
    for a slot. Its requests are then answered "unavailable" (503, nothing
    delivered) while it cannot read the answers. It is killed on the way out."""
    app, config = sending_config(make_app, database, PUSH_DELIVERY_LEASE=LEASE)
    name = f"flask-push-paused-{uuid.uuid4().hex[:8]}"
    options = config.get("SQLALCHEMY_ENGINE_OPTIONS")
    if options is not None:  # PostgreSQL: the workers' connections go by that name
        connect = {**options["connect_args"], "application_name": name}
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {**options, "connect_args": connect}
    with app.app_context():
        add_browsers(service, SUBSCRIBERS)
        # due in a moment, so that this process's inline queue leaves it to the workers
        push.send(everyone=True, title="Flash sale", send_at=utcnow() + timedelta(seconds=1))
        engine = db.engine
    service.hold()
    first = start_worker(tmp_path, config, "first")
    paused = Paused(first, engine, tmp_path, config)
    try:
        # a lane's worth on the network, unanswered; the rest claimed, waiting for a slot
        claimed = wait_until(
            lambda: service.in_flight == LANE and all(r.lease_until for r in paused.rows()), 60
        )
        assert claimed, paused.log("first")
        stop_between_transactions(first, engine, name)
        service.fail_next(503, times=LANE)
        service.release()
        assert wait_until(lambda: service.in_flight == 0 and len(service.requests) == LANE)
        yield paused
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
            first.wait(10)


def test_a_worker_paused_past_its_lease_leaves_what_another_took(
    make_app: Callable[..., Flask], database: dict[str, Any], tmp_path: Path, push_fakes: Any
) -> None:
    service = push_fakes.webpush()
    left = "pushes another worker had taken were left to it"
    with paused_worker(make_app, database, tmp_path, service) as paused:
        # Once the first's lease has run out, the second claims every row and sends it.
        second = start_worker(tmp_path, paused.config, "second")
        try:
            sent = wait_until(lambda: all(r.status == "sent" for r in paused.rows()), 60)
            assert sent, paused.log("second")
        finally:
            second.terminate()
            second.wait(10)
        paused.first.send_signal(signal.SIGCONT)
        assert wait_until(
            lambda: left in paused.log("first") or len(service.pushes) > SUBSCRIBERS, 60
        )
        paused.first.terminate()
        paused.first.wait(10)
    everyone = Counter(f"browser-{i}" for i in range(SUBSCRIBERS))
    assert Counter(p.subscriber_name for p in service.pushes) == everyone
    # the second's outcomes stand: the first's late "retry" did not overwrite them
    assert [(r.status, r.attempts) for r in paused.rows()] == [("sent", 2)] * SUBSCRIBERS
    said = [line for line in paused.log("first").splitlines() if left in line]
    assert len(said) == 1 and f"; {SUBSCRIBERS - LANE} {left}" in said[0], paused.log("first")
    assert "this worker was paused" in said[0]


def test_a_worker_paused_past_its_lease_sends_what_nobody_took(
    make_app: Callable[..., Flask], database: dict[str, Any], tmp_path: Path, push_fakes: Any
) -> None:
    """Its lease ran out, but no other worker claimed the rows meanwhile: they are
    still its own, and it sends them once it goes on, each once."""
    service = push_fakes.webpush()
    with paused_worker(make_app, database, tmp_path, service) as paused:
        assert wait_until(lambda: all(r.lease_until < utcnow() for r in paused.rows()), 60)
        paused.first.send_signal(signal.SIGCONT)
        waiting = SUBSCRIBERS - LANE
        assert wait_until(lambda: len(service.pushes) >= waiting, 60), paused.log("first")
        paused.first.terminate()
        paused.first.wait(10)
    # the rest were answered "unavailable" and wait for their retry
    got = Counter(p.subscriber_name for p in service.pushes)
    assert len(got) == waiting and set(got.values()) == {1}
    statuses = Counter((r.status, r.attempts) for r in paused.rows())
    assert statuses == {("sent", 1): waiting, ("queued", 1): LANE}
    assert "left to it" not in paused.log("first")
