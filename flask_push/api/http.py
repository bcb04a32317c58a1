"""Request and response helpers of the JSON API: errors, bodies, identity."""

from __future__ import annotations

import json
import logging
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import sqlalchemy as sa
from flask import Response, current_app, jsonify, request
from pydantic import BaseModel

from ..errors import ValidationError
from ..schemas.base import Context
from ..schemas.errors import Error, ErrorDetail, check, parse
from ..schemas.fields import UserId
from ..validation import MAX_JSON_DEPTH, clipped

if TYPE_CHECKING:
    from ..extension import Push

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

log = logging.getLogger("flask_push")

#: codes of :class:`ValidationError` that refuse a call for the state of what it
#: names, not for its input: answered 409, not 400
CONFLICTS = {"message_cancelled": 409}


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
        return cls(CONFLICTS.get(err.code, 400), err.code, err.message, err.field)


def error_response(err: ApiError) -> Response:
    detail = ErrorDetail(code=err.code, message=err.message, field=err.field or None)
    response = jsonify(Error(error=detail).to_json())
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


def second_to_insert(write: Callable[[], T]) -> T:
    """``write()``, which looks for a row and inserts it when there is none, and
    commits; once more when another request inserted the same row between the look
    and the insert (a unique key's ``IntegrityError``): this one came second, so it
    finds that row and updates it, as it would have a moment later."""
    try:
        return write()
    except sa.exc.IntegrityError:
        push().db.session.rollback()
        return write()


def caller_id() -> str | None:
    """The signed-in user's id (None when anonymous), or a 400 naming ``userId`` when
    the host's ``identity_loader`` gave an id that cannot be stored."""
    uid = push().current_user_id()
    if uid is None:
        return None
    try:
        return str(check(UserId, uid, "userId"))
    except ValidationError as err:
        # Checked before anything is written: a column of 255 characters would refuse
        # it halfway (PostgreSQL), or keep an owner that no send can name (SQLite).
        log.warning(
            "flask-push: identity_loader returned a user id that cannot be stored: it %s "
            "(%d characters); ids are 1 to 255 characters without NUL. Refused %s %r.",
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
        _tell_of_no_identity_loader()
        fail(401, "authentication_required", "Sign in first: this endpoint needs a user.")
    return uid


def _tell_of_no_identity_loader() -> None:
    """Log once per app that its 401s come from a missing ``identity_loader``: the
    host forgot it, and the browser only sees "Sign in first"."""
    state = current_app.extensions["push"]
    if state.told_no_identity_loader or not state.push.no_identity_loader():
        return
    state.told_no_identity_loader = True
    log.warning(
        "flask-push: %s %s answered 401 because no @push.identity_loader is registered, "
        "so every request is anonymous; register one that returns the signed-in user's id "
        "(this is said once)",
        request.method,
        request.path,
    )


def user_or_admin() -> str | None:
    """The signed-in user's id, or None for an administrator without a user of their
    own (a service account, say); a 401 for anyone else."""
    uid = caller_id()
    if uid is None and not push().current_user_is_admin():
        return user_id()  # 401
    return uid


def owner_for(given: str | None, caller: str | None, refusal: str) -> str:
    """Whom a write is for: ``given`` when the caller may name them (themselves; an
    administrator anyone), else the caller. A 403 saying ``refusal`` when a user
    names someone else; a 401 when nobody is named and nobody is signed in."""
    if given is None or given == caller:
        return caller if caller is not None else user_id()
    if not push().current_user_is_admin():
        fail(403, "forbidden", refusal, "userId")
    return given


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
    if request.content_encoding not in (None, "", "identity"):
        # nothing here decompresses: a gzipped body would be answered "not valid JSON"
        fail(
            415,
            "unsupported_media_type",
            "Send the request body uncompressed, without a Content-Encoding.",
        )
    try:
        # the standard parser, not the app's JSON provider: a host's (floats read
        # as Decimal, say) would hand the checks values JSON does not have
        data = json.loads(raw)
    except UnicodeDecodeError:
        # a charset other than UTF-8 (Latin-1 from an old client): JSON is UTF-8 (RFC 8259)
        fail(400, "invalid_json", "The request body is not valid JSON: send it as UTF-8.")
    except (ValueError, RecursionError):
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


def context() -> Context:
    """What the checks of a request need: this app's settings; values are JSON."""
    return Context.of(push().settings, json=True)


def parse_body(model: type[M]) -> M:
    """The request's JSON body, checked as ``model`` (a 400 names the field at fault)."""
    return parse(model, body(), context())


def nul_in_path() -> bool:
    """Whether an id in the request's path holds NUL: no row has such an id, and
    PostgreSQL would refuse even to look one up. The API and the console answer it
    as an id that matches nothing."""
    return any("\x00" in str(value) for value in (request.view_args or {}).values())


def refuse_unknown_query(known: Iterable[str] = ()) -> None:
    """Refuse a query parameter that is not one of ``known`` (an operation without
    a query: any), as an unknown field of a body is: a filter that is not one
    (``?status=``, ``?userId=``) would answer as if it were applied. Those that are no
    one's filter pass: a cache buster (``_=``, as jQuery adds) and a bearer token
    (``access_token``, RFC 6750) for the host's identity loader."""
    expected = sorted(known)
    unknown = sorted(
        name
        for name in set(request.args) - set(expected)
        if not name.startswith("_") and name != "access_token"
    )
    if unknown:
        takes = f"expected one of {expected}" if expected else "this operation takes none"
        raise ValidationError(
            f"Unknown query parameter {clipped(unknown[0])!r}; {takes}.",
            field=clipped(unknown[0]),
            code="unknown_field",
        )


def parse_query(model: type[M]) -> M:
    """The query string, checked as ``model``: a repeatable parameter is a list field;
    an unknown one is refused (:func:`refuse_unknown_query`)."""
    known = {field.alias or name: field for name, field in model.model_fields.items()}
    refuse_unknown_query(known)
    values: dict[str, Any] = {}
    for key, field in known.items():
        if key not in request.args:
            continue
        repeated = typing.get_origin(field.annotation) is list
        values[key] = request.args.getlist(key) if repeated else request.args[key]
    return parse(model, values, context())
