"""Helpers shared by the shop and staff pages: who is signed in, guards, filters,
checked form fields, safe redirects and the error pages."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Flask,
    abort,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.wrappers import Response

from . import notify
from .extensions import db
from .models import CartItem, User, money

log = logging.getLogger("demo")

#: the most of one item a cart line (and so an order line) may hold
MAX_QUANTITY = 99

P = ParamSpec("P")
R = TypeVar("R")


def current_user() -> User | None:
    if "user" not in g:
        user_id = session.get("user_id")
        g.user = db.session.get(User, int(user_id)) if user_id else None
    user: User | None = g.user
    return user


def login_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        if current_user() is None:
            return redirect(url_for("shop.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapped


def staff_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        user = current_user()
        if user is None:
            return redirect(url_for("shop.login", next=request.full_path))
        if not user.is_staff:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


# -- form fields ----------------------------------------------------------------------


class FormError(BadRequest):
    """A form field to fix: a 400 whose message is shown on the page."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


#: whole numbers only, and short enough that no column or OFFSET overflows
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")
#: what ``<input type="email">`` accepts (the HTML standard's "valid email address"),
#: so the server refuses exactly what a browser's own check would
_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)


def int_field(
    values: Mapping[str, str],
    name: str,
    *,
    low: int,
    high: int,
    default: int | None = None,
    label: str | None = None,
) -> int:
    """The whole number in ``values[name]`` (a form or the query string), between
    ``low`` and ``high``; ``default`` when the field is missing or empty."""
    raw = (values.get(name) or "").strip()
    if not raw and default is not None:
        return default
    if not _WHOLE_NUMBER.fullmatch(raw) or not low <= int(raw) <= high:
        label = label or name.replace("_", " ").capitalize()
        raise FormError(name, f"{label} must be a whole number from {low} to {high}.")
    return int(raw)


def text_field(
    values: Mapping[str, str],
    name: str,
    *,
    max_length: int,
    required: bool = True,
    label: str | None = None,
) -> str:
    """The text in ``values[name]``, trimmed; an error when required and empty, or too long."""
    value = (values.get(name) or "").strip()
    label = label or name.replace("_", " ").capitalize()
    if required and not value:
        raise FormError(name, f"{label} is needed.")
    if len(value) > max_length:
        raise FormError(name, f"{label} can be at most {max_length} characters long.")
    return value


def is_email(value: str) -> bool:
    return len(value) <= 254 and _EMAIL.fullmatch(value) is not None


# -- redirects ------------------------------------------------------------------------


def local_path(target: str | None, fallback: str) -> str:
    """``target`` when it is a path on this site, else ``fallback``.

    Browsers read ``//host``, ``/\\host`` and ``/<tab>/host`` as another site (they turn
    backslashes into slashes and drop tabs and newlines), so a path must start with
    exactly one slash and carry no backslash and no control character.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return fallback
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    return target


def redirect_back(target: str | None, fallback: str) -> Response:
    """Redirect to ``target`` (a ``next`` field or argument) if it is local, else ``fallback``."""
    return redirect(local_path(target, fallback))


def sign_in(user: User) -> None:
    session.clear()
    session["user_id"] = user.id
    session["role"] = user.role
    g.pop("user", None)


def when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    # named: a shopper reads a bare time as her own zone's
    return value.strftime("%b %d, %H:%M UTC")


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 item``, ``2 items``: a count with its noun."""
    return f"{count} {one if count == 1 else many or one + 's'}"


def register_helpers(app: Flask) -> None:
    app.add_template_filter(money)
    app.add_template_filter(plural)
    app.add_template_filter(when)
    # a value, not a function: add_template_global is for callables (and typed so)
    app.jinja_env.globals["max_quantity"] = MAX_QUANTITY

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
            # below the mount point the request came through (an app served at /shop
            # has its API at /shop/push); the service worker's address the client asks
            # of the app (GET <prefix>/client-config), which knows the mount too
            "push_prefix": request.script_root + app.config.get("PUSH_URL_PREFIX", "/push"),
            "type_labels": notify.type_labels(),
        }


# -- error pages ------------------------------------------------------------------------

#: each error page's JSON code, title and sentence
_ERRORS = {
    400: ("bad_request", "That did not work", "The request was not understood."),
    403: ("forbidden", "Not for this account", "Your account cannot open this page."),
    404: (
        "not_found",
        "Page not found",
        "There is no such page here: it may have moved, or the link is wrong.",
    ),
    405: ("method_not_allowed", "That does not work here", "This page cannot be used that way."),
    500: (
        "internal_error",
        "Something went wrong",
        "Something broke on our side. It is logged; please try again.",
    ),
}


def register_error_pages(app: Flask) -> None:
    """HTML error pages with the shop's header and a way back; JSON for the demo's own
    ``.json`` endpoints. flask-push answers under its prefix in its own JSON shape."""
    prefix = app.config.get("PUSH_URL_PREFIX", "/push")

    @app.errorhandler(HTTPException)
    def error_page(err: HTTPException) -> Any:
        path = request.path
        if request.blueprint == "push" or path == prefix or path.startswith(prefix + "/"):
            return err
        status = err.code or 500
        if status >= 500:
            db.session.rollback()  # the failed request may have left the session unusable
        code, title, sentence = _ERRORS.get(
            status, ("http_error", err.name, "The request could not be served.")
        )
        # a FormError or an abort(400, "...") says what to fix; werkzeug's defaults do not
        custom = err.description if err.description != type(err).description else None
        message = custom or sentence
        headers = {k: v for k, v in err.get_headers() if k.lower() != "content-type"}
        if path.endswith(".json"):
            error = {"code": code, "message": message}
            if isinstance(err, FormError):
                error["field"] = err.field
            return jsonify({"error": error}), status, headers
        try:
            page = render_template("error.html", status=status, title=title, message=message)
        except Exception:  # the page needs the database (who is signed in): say it plainly
            log.exception("demo: could not render the %s page for %s", status, path)
            return Response(f"{status} {title}: {message}", status, mimetype="text/plain")
        return page, status, headers
