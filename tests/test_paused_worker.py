"""A worker paused past its lease sends nothing that another worker took meanwhile.

Real worker processes (``flask push worker``) deliver to a local push service.
The first is stopped (SIGSTOP: a frozen VM, a long stall) with a lane's worth of
pushes on the network and the rest claimed and waiting for a slot; its lease runs
out, and a second worker claims every row and sends it. Once the first goes on
(SIGCONT), it must leave those rows to the second: nobody gets the push twice,
and the second's outcomes stand.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from test_sigkill import LANE, LEASE, add_browsers, sending_config, start_worker

from flask_push.models import utcnow

from conftest import db, push, wait_until

#: a lane's worth on the network, and the rest waiting for a slot
SUBSCRIBERS = LANE + 30


def stop_between_transactions(
    worker: subprocess.Popen[bytes], engine: sa.Engine, name: str
) -> None:
    """SIGSTOP ``worker`` at a moment when none of its connections is inside a
    transaction (a lease renewal, say): rows it had locked would stay locked, and
    another worker's claim skips locked rows."""
    busy = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND state <> 'idle'"
    )
    for _ in range(100):
        worker.send_signal(signal.SIGSTOP)
        with engine.connect() as conn:
            if not conn.execute(busy, {"name": name}).scalar():
                return
        worker.send_signal(signal.SIGCONT)
    raise AssertionError("the worker was always inside a transaction")


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_worker_paused_past_its_lease_leaves_what_another_took(
    make_app: Callable[..., Flask], database: dict[str, Any], tmp_path: Path, push_fakes: Any
) -> None:
    service = push_fakes.webpush()
    app, config = sending_config(make_app, database, PUSH_DELIVERY_LEASE=LEASE)
    # the workers' connections go by a name of their own (see stop_between_transactions)
    name = f"flask-push-paused-{uuid.uuid4().hex[:8]}"
    options = config["SQLALCHEMY_ENGINE_OPTIONS"]
    connect = {**options["connect_args"], "application_name": name}
    config["SQLALCHEMY_ENGINE_OPTIONS"] = {**options, "connect_args": connect}
    d = push.models.Delivery
    with app.app_context():
        add_browsers(service, SUBSCRIBERS)
        # due in a moment, so that this process's inline queue leaves it to the workers
        push.send(everyone=True, title="Flash sale", send_at=utcnow() + timedelta(seconds=1))
        engine = db.engine

    def rows() -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(d.status, d.attempts, d.lease_until)))

    def log(name: str) -> str:
        return (tmp_path / f"{name}.log").read_text()

    service.hold()
    first = start_worker(tmp_path, config, "first")
    second: subprocess.Popen[bytes] | None = None
    try:
        # a lane's worth on the network, unanswered; the rest claimed, waiting for a slot
        claimed = wait_until(
            lambda: service.in_flight == LANE and all(r.lease_until for r in rows()), 60
        )
        assert claimed, log("first")
        stop_between_transactions(first, engine, name)
        # Its requests are answered while it cannot read the answers: unavailable,
        # nothing delivered (the second worker sends those too).
        service.fail_next(503, times=LANE)
        service.release()
        assert wait_until(lambda: service.in_flight == 0 and len(service.requests) == LANE)

        # Once the first's lease has run out, the second claims every row and sends it.
        second = start_worker(tmp_path, config, "second")
        assert wait_until(lambda: all(r.status == "sent" for r in rows()), 60), log("second")
        second.terminate()
        second.wait(10)

        first.send_signal(signal.SIGCONT)
        left = "pushes another worker had taken were left to it"
        assert wait_until(lambda: left in log("first") or len(service.pushes) > SUBSCRIBERS, 60)
        first.terminate()
        first.wait(10)
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGCONT)
                worker.kill()
                worker.wait(10)
    everyone = Counter(f"browser-{i}" for i in range(SUBSCRIBERS))
    assert Counter(p.subscriber_name for p in service.pushes) == everyone
    # the second's outcomes stand: the first's late "retry" did not overwrite them
    assert [(r.status, r.attempts) for r in rows()] == [("sent", 2)] * SUBSCRIBERS
    said = [line for line in log("first").splitlines() if left in line]
    assert len(said) == 1 and f"; {SUBSCRIBERS - LANE} {left}" in said[0], log("first")
    assert "this worker was paused" in said[0]
