"""A process that sends with the ``thread`` queue and exits without
``push.shutdown()`` has sent what it queued, and loses nothing when it cannot: its
worker delivers what is due for up to ``EXIT_DRAIN`` seconds, the pushes on the
network then are delivered, the others stay queued for the next worker, and none
ends ``failed``.

A real child process sends to the fake services (FCM fetches its access token in
the loop's executor, which refuses work once the interpreter starts exiting), for
each provider.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flask_push.testing import FakeAPNs, FakeFCM, FakePushService

TARGETS = 120

CHILD = """
import json, os, time
from flask import Flask
import flask_push.queues
from flask_sqlalchemy import SQLAlchemy
from flask_push import Push

db = SQLAlchemy()
push = Push(db=db)
app = Flask(__name__)
app.config.update(json.loads(os.environ["CHILD_CONFIG"]))
db.init_app(app)
push.init_app(app)
with app.app_context():
    db.create_all()
    for target in json.loads(os.environ["CHILD_TARGETS"]):
        if "endpoint" in target:
            row = push.models.Subscription(
                endpoint=target["endpoint"], p256dh=target["keys"]["p256dh"],
                auth=target["keys"]["auth"], user_id="al", topics=[])
        else:
            row = push.models.Installation(user_id="al", subscriptions=[], **target)
        db.session.add(row)
    db.session.commit()
    push.send(users=["al"], title="Your order is on its way")
    if "CHILD_DRAIN" in os.environ:  # how long the worker may go on when the script ends
        flask_push.queues.EXIT_DRAIN = float(os.environ["CHILD_DRAIN"])
        time.sleep(0.5)  # the worker thread has pushes on the network now
# the script ends here: no push.shutdown()
"""


def fake_for(kind: str) -> Any:
    # every answer takes a while, so that pushes are on the network at exit
    if kind == "webpush":
        return FakePushService(delay=0.5)
    if kind == "fcm":
        return FakeFCM(delay=0.5)
    return FakeAPNs(topic="com.example.shop", delay=0.5)


def run_child(tmp_path: Path, kind: str, drain: float | None) -> tuple[dict[str, int], int]:
    """Run the script; the deliveries' statuses and how many pushes arrived."""
    database = tmp_path / "app.db"
    with fake_for(kind) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSH_")}
        config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}", **fake.app_config()}
        if kind == "webpush":
            targets = [fake.subscribe().info for _ in range(TARGETS)]
        else:
            device = "android" if kind == "fcm" else "ios"
            targets = [
                {"app_id": "shop", "device_type": device, "device_token": f"{i:04x}" + "ab" * 30}
                for i in range(TARGETS)
            ]
        if kind == "apns":
            env["SSL_CERT_FILE"] = fake.certificate.trust_bundle()
        env["CHILD_CONFIG"] = json.dumps(config)
        env["CHILD_TARGETS"] = json.dumps(targets)
        if drain is not None:
            env["CHILD_DRAIN"] = str(drain)
        child = subprocess.run(
            [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
        )
        received = len(
            fake.pushes
            if kind == "webpush"
            else getattr(fake, "messages", None) or fake.notifications
        )
    assert child.returncode == 0, child.stderr
    assert "Traceback" not in child.stderr and "RuntimeError" not in child.stderr, child.stderr
    with sqlite3.connect(database) as connection:
        statuses = dict(
            connection.execute("SELECT status, count(*) FROM push_deliveries GROUP BY status")
        )
    assert sum(statuses.values()) == TARGETS
    return statuses, received


@pytest.mark.parametrize("kind", ["webpush", "fcm", "apns"])
def test_a_script_that_sends_and_ends_has_sent(tmp_path: Path, kind: str) -> None:
    """The script ends at once after its send: its worker delivers it all first
    (two rounds of answers that take 0.5 s, well within EXIT_DRAIN)."""
    statuses, received = run_child(tmp_path, kind, drain=None)
    assert statuses == {"sent": TARGETS}
    assert received == TARGETS


@pytest.mark.parametrize("kind", ["webpush", "fcm", "apns"])
def test_exit_with_pushes_in_flight_loses_nothing(tmp_path: Path, kind: str) -> None:
    """No time to drain (EXIT_DRAIN = 0): what is on the network arrives, the rest
    is handed back."""
    statuses, received = run_child(tmp_path, kind, drain=0)
    assert set(statuses) <= {"sent", "queued"}, statuses  # nothing failed
    assert statuses.get("sent", 0) >= 1  # what was on the network arrived
    assert received == statuses.get("sent", 0)  # each once; the rest wait for a worker
