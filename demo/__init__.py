"""The demo delivery storefront: flask-push embedded the way a host app does it.

``flask --app demo run`` serves it with whatever ``instance/demo.cfg`` says;
``python -m demo`` (what ``make demo`` runs) also makes the database, the VAPID
keys and the seed data, and starts local fake FCM and APNs services.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, session

from .extensions import db, push

__all__ = ["create_app", "db", "push"]


@push.identity_loader
def current_user_id() -> str | None:
    """Who is calling: the signed-in user's id from the Flask session."""
    user_id = session.get("user_id")
    return None if user_id is None else str(user_id)


@push.admin_loader
def is_admin() -> bool:
    """Staff may use flask-push's admin endpoints (messages, providers, installations)."""
    return session.get("role") == "staff"


@push.channel_authorizer
def may_join(user_id: str | None, channel: str) -> bool:
    """Users join their own ``user:<id>``; customers ``activity:order-<n>`` of their own
    orders (flask-push lets the users an activity is shown to join its channel; this
    also covers an order placed before the demo had live activities); staff any
    channel."""
    if user_id is None:
        return False
    from .models import Order, User

    user = db.session.get(User, int(user_id)) if _number(user_id) else None
    if user is None:
        return False
    if user.is_staff:
        return True
    if channel == f"user:{user_id}":
        return True
    kind, _, ident = channel.partition(":")
    number = ident.removeprefix("order-")
    if kind == "activity" and ident.startswith("order-") and _number(number) and len(number) < 10:
        order = db.session.get(Order, int(number))
        return order is not None and order.user_id == user.id
    return False


def _number(text: str) -> bool:
    """Digits that int() reads (a superscript two is a digit to isdigit(), not to int())."""
    return text.isascii() and text.isdigit()


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The storefront app: defaults, then ``instance/demo.cfg``, then ``test_config``."""
    app = Flask(
        __name__,
        instance_relative_config=True,
        static_folder=os.path.join(os.path.dirname(os.path.dirname(__file__)), "static"),
        static_url_path="/static",
    )
    app.config.from_mapping(
        SECRET_KEY="demo-only-not-secret",
        # The shop's forms carry no CSRF token: a Lax session cookie is not sent with
        # another site's POST, which is enough for a demo on localhost.
        SESSION_COOKIE_SAMESITE="Lax",
        SQLALCHEMY_DATABASE_URI="sqlite:///" + os.path.join(app.instance_path, "demo.sqlite"),
        DEMO_EXPORT_DELAY=0.25,
        DEMO_APP_ID="com.example.freshcart",
        # What shoppers choose on their "Notification settings" page: per category,
        # browser, phone and inbox on or off (every send names its category).
        PUSH_CATEGORIES={
            "order_status": {"label": "Order updates", "required": True},
            "offers": {"label": "Offers and deals", "max_per_day": 2},
            "shares": {"label": "Things friends share"},
            # off until the shopper turns it on: consent first
            "news": {"label": "News", "default": False},
        },
    )
    app.config.from_pyfile("demo.cfg", silent=True)
    if test_config:
        app.config.update(test_config)
    os.makedirs(app.instance_path, exist_ok=True)

    db.init_app(app)
    push.init_app(app)

    from . import models  # noqa: F401  (register the tables on db)
    from .shop import bp as shop_bp
    from .staff import bp as staff_bp
    from .views import register_error_pages, register_helpers

    register_helpers(app)
    register_error_pages(app)
    app.register_blueprint(shop_bp)
    app.register_blueprint(staff_bp, url_prefix="/staff")

    from .seed import seed_command

    app.cli.add_command(seed_command)
    return app
