"""A worker killed with SIGKILL mid-fan-out loses nothing.

Real worker processes (``flask push worker``) deliver to a local push service;
the first is killed while it holds claimed deliveries. Once their lease runs
out, a second worker sends every one of them: all targets get the push, and
duplicates stay within the batches that were in flight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from flask_push.dispatch import PIPELINE_DEPTH
from flask_push.models import utcnow
from flask_push.testing import FakePushService

from conftest import db, push

SUBSCRIBERS = 120
BATCH = 10

HOST_APP = """
import json, os
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from flask_push import Push

db = SQLAlchemy()
push = Push(db=db)


def create_app():
    app = Flask(__name__)
    app.config.update(json.loads(os.environ["PUSH_TEST_CONFIG"]))
    db.init_app(app)
    push.init_app(app)
    return app
"""


def start_worker(tmp_path: Path, config: dict[str, Any], name: str) -> subprocess.Popen[bytes]:
    """``flask push worker`` in a process of its own; what it says goes to ``<name>.log``."""
    env = {**os.environ, "PUSH_TEST_CONFIG": json.dumps(config), "PYTHONPATH": str(tmp_path)}
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "host:create_app", "push", "worker",
             "--interval", "0.1"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_sigkill_mid_fanout_loses_nothing(
    make_app: Callable[..., Flask], database: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "host.py").write_text(HOST_APP)
    with FakePushService(delay=0.05) as service:
        config = {
            **database,
            "PUSH_VAPID_PRIVATE_KEY": None,  # filled below from the test app
            "PUSH_VAPID_SUBJECT": "mailto:ops@shop.example",
            "PUSH_ENDPOINT_HOSTS": ["127.0.0.1"],
            "PUSH_ALLOW_HTTP_ENDPOINTS": True,
            "PUSH_DELIVERY_BATCH": BATCH,
            "PUSH_DELIVERY_LEASE": 1,
        }
        app = make_app(PUSH_QUEUE="inline", **{k: v for k, v in config.items() if v is not None})
        config["PUSH_VAPID_PRIVATE_KEY"] = app.config["PUSH_VAPID_PRIVATE_KEY"]
        with app.app_context():
            for i in range(SUBSCRIBERS):
                browser = service.subscribe(f"browser-{i}")
                db.session.add(push.models.Subscription(
                    endpoint=browser.endpoint, p256dh=browser.p256dh, auth=browser.auth,
                    user_id=f"user-{i}", topics=[],
                ))  # fmt: skip
            db.session.commit()
            # Due in a moment, so that this process's inline queue leaves it to the workers.
            message = push.send(everyone=True, title="Flash sale",
                                send_at=utcnow() + timedelta(seconds=1))  # fmt: skip

        first = start_worker(tmp_path, config, "first")
        try:
            started = wait_until(lambda: len(service.pushes) >= 3 * BATCH, 30)
            assert started, (tmp_path / "first.log").read_text()
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            first.kill()
        killed_at = len(service.pushes)
        assert killed_at < SUBSCRIBERS, "the worker finished before it could be killed"

        second = start_worker(tmp_path, config, "second")
        try:
            everyone = {f"browser-{i}" for i in range(SUBSCRIBERS)}

            def all_sent() -> bool:
                # Receipt alone is not enough: pushes the first worker had in flight
                # may still arrive after the kill, and only the second worker can
                # record them.
                with app.app_context():
                    statuses = db.session.scalars(sa.select(push.models.Delivery.status)).all()
                    db.session.rollback()
                return statuses == ["sent"] * SUBSCRIBERS

            assert wait_until(all_sent, 60), (tmp_path / "second.log").read_text()
        finally:
            second.terminate()
            second.wait(10)

        pushes = service.pushes
        assert {p.subscriber_name for p in pushes} == everyone
        # only the batches in flight (sent, their outcomes not yet written) went twice
        assert len(pushes) - SUBSCRIBERS <= PIPELINE_DEPTH * BATCH
        assert all(p.json()["messageId"] == message.id for p in pushes)
        with app.app_context():
            statuses = db.session.scalars(sa.select(push.models.Delivery.status)).all()
        assert statuses == ["sent"] * SUBSCRIBERS
