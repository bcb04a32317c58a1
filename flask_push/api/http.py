"""Request and response helpers of the JSON API: errors, bodies, identity."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from flask import Response, current_app, jsonify, request

from .. import validation
from ..errors import ValidationError
from ..validation import MAX_JSON_DEPTH

if TYPE_CHECKING:
    from ..extension import Push

log = logging.getLogger("flask_push")


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "field"?}}``, with
    ``headers`` (such as ``Retry-After``) on the response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})

    @classmethod
    def from_validation(cls, err: ValidationError) -> ApiError:
        return cls(400, err.code, err.message, err.field)


def error_response(err: ApiError) -> Response:
    error: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.field:
        error["field"] = err.field
    response = jsonify(error=error)
    response.status_code = err.status
    response.headers.update(err.headers)
    return response


def fail(status: int, code: str, message: str, field: str | None = None) -> NoReturn:
    raise ApiError(status, code, message, field)


def not_found(what: str) -> NoReturn:
    # Also the answer for rows that exist but belong to someone else: never
    # confirm that another user's id is real.
    fail(404, "not_found", f"No {what} with that id.")


def push() -> Push:
    return current_app.extensions["push"].push


def caller_id() -> str | None:
    """The signed-in user's id (None when anonymous), or a 400 naming ``userId`` when
    the host's ``identity_loader`` gave an id that cannot be stored."""
    uid = push().current_user_id()
    if uid is None:
        return None
    try:
        return validation.text(uid, "userId", max_length=255)
    except ValidationError as err:
        # Checked before anything is written: a column of 255 characters would refuse
        # it halfway (PostgreSQL), or keep an owner that no send can name (SQLite).
        log.warning(
            "flask-push: identity_loader returned a user id that cannot be stored: it %s "
            "(%d characters); ids are 1 to 255 characters without NUL. Refused %s %s.",
            err.message,
            len(uid),
            request.method,
            request.path,
        )
        raise ApiError(
            400,
            err.code,
            f"The signed-in user's id cannot be stored: it {err.message}.",
            "userId",
        ) from None


def user_id() -> str:
    """The signed-in user's id, or a 401."""
    uid = caller_id()
    if uid is None:
        fail(401, "authentication_required", "Sign in first: this endpoint needs a user.")
    return uid


def require_admin() -> None:
    if not push().current_user_is_admin():
        fail(403, "forbidden", "Only administrators may use this endpoint.")


def require_webpush() -> str:
    """The VAPID public key, or a 503 saying how to set Web Push up."""
    key: str | None = current_app.extensions["push"].settings.vapid_public_key
    if key is None:
        fail(
            503,
            "webpush_not_configured",
            "Web Push is not set up on this server: set PUSH_VAPID_PRIVATE_KEY and "
            "PUSH_VAPID_SUBJECT (run `flask push vapid-keys` to make a key).",
        )
    return key


def body() -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty body)."""
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # Werkzeug stops reading a chunked body at the limit without a word, which
        # would surface as "invalid JSON"; say what really happened.
        fail(413, "payload_too_large", "The request body is too large.")
    if not raw:
        return {}
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        data = None
    if data is None:
        fail(400, "invalid_json", "The request body is not valid JSON.")
    if not isinstance(data, dict):
        fail(400, "invalid_json", "The request body must be a JSON object.")
    problem = _unstorable(data)
    if problem:
        fail(400, "invalid_json", problem)
    return data


def _unstorable(data: Any) -> str | None:
    """Why parsed JSON could not be stored and answered as JSON again, if so.

    Python's parser takes ``NaN``, ``Infinity`` and ``1e400`` (which is infinite),
    none of which PostgreSQL stores or a JSON answer may contain.
    """
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"The request body is nested more than {MAX_JSON_DEPTH} levels deep."
        if isinstance(value, float) and not math.isfinite(value):
            return "Numbers in the request body must be finite: NaN and Infinity are not JSON."
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return None


def only_fields(
    data: dict[str, Any], allowed: set[str] | frozenset[str], where: str | None = None
) -> None:
    """Refuse unknown fields, so that a typo is an error rather than silently ignored.

    ``where`` names the enclosing object of a nested one (``notification``), so the
    error's field is a path such as ``notification.colour``.
    """
    for name in data:
        if name not in allowed:
            fail(
                400,
                "unknown_field",
                f"Unknown field {name!r}; expected one of {sorted(allowed)}.",
                f"{where}.{name}" if where else name,
            )


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        fail(400, "invalid_value", f"must be a whole number from {low} to {high}", name)
    return value


def query_bool(name: str) -> bool:
    raw = request.args.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        fail(400, "invalid_value", "must be true or false", name)
    return raw in ("true", "1")
