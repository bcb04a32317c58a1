"""A flask-push app served on a free port, for tests that need several processes.

``python ws_server.py <backplane url> <prefix> <sqlite path>`` prints ``port <n>``
once it listens. ``POST /publish`` publishes ``{"channel","event","data"}``.
"""

from __future__ import annotations

import sys

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from werkzeug.serving import make_server

from flask_push import Push
from flask_push.errors import BackplaneError

db = SQLAlchemy()
push = Push(db=db)


@push.identity_loader
def identity() -> str | None:
    return request.headers.get("X-User")


def create_app(backplane: str, prefix: str, database: str) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{database}",
        PUSH_BACKPLANE_URL=backplane,
        PUSH_BACKPLANE_PREFIX=prefix,
        PUSH_WS_HEARTBEAT=0,
        PUSH_SUPPRESS_SEND=True,
    )
    db.init_app(app)
    push.init_app(app)

    @app.post("/publish")
    def publish() -> tuple[dict[str, object], int]:
        body = request.get_json()
        try:
            return {"id": push.publish(body["channel"], body["event"], body.get("data"))}, 200
        except BackplaneError as err:
            return {"error": str(err)}, 503

    return app


if __name__ == "__main__":
    server = make_server("127.0.0.1", 0, create_app(*sys.argv[1:4]), threaded=True)
    print(f"port {server.server_port}", flush=True)
    server.serve_forever(poll_interval=0.1)
