"""``python -m demo``: everything ``make demo`` needs, in one process.

Makes the SQLite database and a VAPID key pair in the instance folder (kept for the
next run), seeds the catalog and accounts, starts flask-push's fake FCM and APNs
services on 127.0.0.1 and points the app at them, then serves on
http://127.0.0.1:5000 with the in-process delivery workers.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

import certifi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from flask_push.testing import FakeAPNs, FakeFCM

from . import create_app
from .schema import create_tables
from .seed import PASSWORD, USERS, seed

INSTANCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "instance")


def vapid_key(folder: str) -> str:
    """The instance's VAPID private key (PEM), made on the first run and reused after:
    browsers' subscriptions are bound to it."""
    path = os.path.join(folder, "vapid_private_key.pem")
    if not os.path.exists(path):
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
            handle.write(pem)
        print(f" * made a VAPID key pair: {os.path.relpath(path)}")
    with open(path) as handle:
        return handle.read()


def start_fakes(folder: str, topic: str) -> tuple[FakeFCM, FakeAPNs, dict[str, Any]]:
    """Start the fake FCM and APNs services and return the config that points at them."""
    fcm = FakeFCM().start()
    apns = FakeAPNs(topic=topic).start()
    key_pem, key_id, team_id = apns.auth_key()
    # APNs is reached over TLS checked against the default trust store: trust the
    # public roots plus the fake's own certificate, for this process only.
    bundle = os.path.join(folder, "demo-ca-bundle.pem")
    with open(bundle, "w") as out, open(certifi.where()) as roots:
        out.write(roots.read())
        with open(apns.certificate.cert_file) as local:
            out.write("\n" + local.read())
    os.environ["SSL_CERT_FILE"] = bundle
    config = {
        "PUSH_FCM_CREDENTIALS": fcm.service_account(project_id="freshcart-demo"),
        "PUSH_FCM_BASE_URL": fcm.base_url,
        "PUSH_APNS_KEY": key_pem,
        "PUSH_APNS_KEY_ID": key_id,
        "PUSH_APNS_TEAM_ID": team_id,
        "PUSH_APNS_TOPIC": topic,
        "PUSH_APNS_BASE_URL": f"https://127.0.0.1:{apns.port}",
    }
    return fcm, apns, config


def build(
    instance: str, topic: str = "com.example.freshcart", config: dict[str, Any] | None = None
) -> tuple[Flask, dict[str, Any]]:
    """The demo app on the instance folder ``instance``, with its fake FCM and APNs
    running, database created and seeded; returns the app and what seeding added.
    ``config`` is laid over the demo's own (tests point Web Push at a local service)."""
    os.makedirs(instance, exist_ok=True)
    fcm, apns, fake_config = start_fakes(instance, topic)
    config = {
        "SQLALCHEMY_DATABASE_URI": "sqlite:///" + os.path.join(instance, "demo.sqlite"),
        "PUSH_VAPID_PRIVATE_KEY": vapid_key(instance),
        "PUSH_VAPID_SUBJECT": "mailto:shop@example.com",
        "PUSH_QUEUE": "thread",
        "DEMO_APP_ID": topic,
        **fake_config,
        **(config or {}),
    }
    app = create_app(config)  # flask-push reads its config here, in init_app
    app.instance_path = instance
    app.extensions["demo_fakes"] = {"fcm": fcm, "apns": apns}
    with app.app_context():
        upgraded = create_tables()
        added = seed()
    if upgraded:
        where = os.path.relpath(os.path.join(instance, "demo.sqlite"))
        print(f" * brought {where} up to date: added {', '.join(upgraded)}")
    return app, added


def stop(app: Flask) -> None:
    """Stop the app's delivery workers and its fake services."""
    with app.app_context():
        app.extensions["push"].shutdown()
    for fake in app.extensions["demo_fakes"].values():
        fake.stop()


def port_taken(host: str, port: int) -> str | None:
    """Why the demo cannot listen on ``host:port``, or None when it can."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # as werkzeug binds: a port left in TIME_WAIT by a stopped demo is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            return err.strerror or str(err)
    return None


def port_number(text: str) -> int:
    """``--port``: a TCP port a browser can be pointed at, 1 to 65535 (0 would have
    the system pick one, which the demo could not print)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: choose one from 1 to 65535")
    return port


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_number, default=5000)
    args = parser.parse_args()
    taken = port_taken(args.host, args.port)
    if taken:
        # said before anything is built or seeded, and with what to do
        parser.exit(
            1,
            f"Port {args.port} on {args.host} is in use ({taken}): stop what serves "
            f"there, or serve the demo elsewhere with `make demo PORT={args.port + 1}` "
            f"(or `.venv/bin/python -m demo --port {args.port + 1}`).\n",
        )

    app, added = build(INSTANCE)
    fakes = app.extensions["demo_fakes"]
    fcm, apns = fakes["fcm"], fakes["apns"]
    if any(added.values()):
        print(" * seeded: " + ", ".join(f"{n} {kind}" for kind, n in added.items()))
    print(f" * fake FCM at {fcm.base_url}, fake APNs at https://127.0.0.1:{apns.port}")
    url = f"http://{args.host}:{args.port}"
    print()
    print(f"   FreshCart demo: {url}")
    print(f"   sign in as any of these, password {PASSWORD!r}:")
    for email, _name, role in USERS:
        print(f"     {email:<22} {role}")
    print()
    try:
        app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    finally:
        stop(app)


if __name__ == "__main__":
    main()
