"""The app of ``bench/scaleout.py``'s ``flask push worker`` processes.

``FLASK_APP=_scale_app:create_app`` (with this folder on ``PYTHONPATH``); the whole
config comes from one environment variable, ``PUSH_BENCH_SCALE_CONFIG`` (JSON), which
the benchmark writes, so that its sending process and every worker process share the
database schema, the VAPID key and the queue. The benchmark's own sending app is built
by this same function.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import flask_push
from flask_push import Push

ENV = "PUSH_BENCH_SCALE_CONFIG"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """An app built as a host builds it, on the benchmark's schema.

    ``config`` keys: ``database_url``, ``schema``, ``vapid_key``, ``queue``, and for
    the celery queue ``broker_url`` and ``celery_queue``; ``application_name`` names
    the process's PostgreSQL connections, so the benchmark can see it is connected;
    ``flask_push_file``, the benchmark's own ``flask_push.__file__``, which a worker
    must have imported too, or it would measure other code.
    """
    if config is None:
        config = json.loads(os.environ[ENV])
    expected = config.get("flask_push_file")
    if expected and os.path.realpath(expected) != os.path.realpath(flask_push.__file__):
        raise RuntimeError(
            f"this worker imported flask_push from {flask_push.__file__}, "
            f"the benchmark from {expected}"
        )
    options = f"-csearch_path={config['schema']}"
    db = SQLAlchemy()
    push = Push(db=db)
    app = Flask("flask_push_bench_scale")
    app.config.update(
        SECRET_KEY="bench-scale-secret",
        SQLALCHEMY_DATABASE_URI=config["database_url"],
        SQLALCHEMY_ENGINE_OPTIONS={
            "connect_args": {
                "options": options,
                "application_name": config.get("application_name", "flask_push_bench_scale"),
            }
        },
        PUSH_VAPID_PRIVATE_KEY=config["vapid_key"],
        PUSH_VAPID_SUBJECT="mailto:bench@example.com",
        PUSH_ENDPOINT_HOSTS=["127.0.0.1"],
        PUSH_QUEUE=config["queue"],
        PUSH_SUPPRESS_SEND=False,
    )
    if config["queue"] == "celery":
        app.config.update(
            PUSH_CELERY_BROKER_URL=config["broker_url"],
            PUSH_CELERY_QUEUE=config["celery_queue"],
        )
    db.init_app(app)
    push.init_app(app)
    return app
