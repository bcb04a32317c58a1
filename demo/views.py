"""Helpers shared by the shop and staff pages: who is signed in, guards, filters."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Flask, abort, g, redirect, request, session, url_for

from .extensions import db
from .models import CartItem, User

F = TypeVar("F", bound=Callable[..., Any])


def current_user() -> User | None:
    if "user" not in g:
        user_id = session.get("user_id")
        g.user = db.session.get(User, int(user_id)) if user_id else None
    user: User | None = g.user
    return user


def login_required(view: F) -> F:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            return redirect(url_for("shop.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def staff_required(view: F) -> F:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = current_user()
        if user is None:
            return redirect(url_for("shop.login", next=request.full_path))
        if not user.is_staff:
            abort(403)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def sign_in(user: User) -> None:
    session.clear()
    session["user_id"] = user.id
    session["role"] = user.role
    g.pop("user", None)


def money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.strftime("%b %d, %H:%M")


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 item``, ``2 items``: a count with its noun."""
    return f"{count} {one if count == 1 else many or one + 's'}"


def register_helpers(app: Flask) -> None:
    app.add_template_filter(money)
    app.add_template_filter(plural)
    app.add_template_filter(when)

    @app.context_processor
    def inject() -> dict[str, Any]:
        user = current_user()
        cart_count = 0
        if user is not None and not user.is_staff:
            cart_count = (
                db.session.scalar(
                    sa.select(sa.func.sum(CartItem.quantity)).where(CartItem.user_id == user.id)
                )
                or 0
            )
        return {
            "user": user,
            "cart_count": cart_count,
            "push_prefix": app.config.get("PUSH_URL_PREFIX", "/push"),
            "sw_url": app.config.get("PUSH_SERVICE_WORKER_URL", "/push-sw.js"),
        }
