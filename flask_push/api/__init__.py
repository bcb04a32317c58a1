"""The ``push`` blueprint: the JSON API of CONTRACT.md section 3.

Every answer, errors included, is JSON: routing errors under the prefix
(unknown path, wrong method) are turned into the error shape too, without
touching how the host's own routes answer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, default_exceptions
from werkzeug.routing import RequestRedirect

from .. import database, validation
from ..config import PushSettings
from ..errors import ValidationError
from . import routes
from .http import ApiError, error_response, nul_in_path, push

log = logging.getLogger("flask_push")

#: seconds a client is asked to wait when the database cannot be reached
DATABASE_RETRY_AFTER = 5

_STATIC = str(Path(__file__).resolve().parent.parent / "static")

#: methods whose requests carry a JSON body and change state
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})

#: what static/ serves, by suffix: guessed types vary by machine (.mjs is unknown to
#: older tables), a browser runs a module script only when it is served as JavaScript,
#: and applies a stylesheet only when it is served as CSS
_STATIC_TYPES = {
    ".js": "application/javascript; charset=utf-8",
    ".mjs": "application/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def static_answer(response: Response) -> Response:
    """A static file's answer (the client's or the console's), typed by its suffix and
    read whole."""
    content_type = _STATIC_TYPES.get(Path(request.path).suffix)
    if content_type is not None:
        response.content_type = content_type
    # The files are small: read them now instead of streaming the open file,
    # which stays open until the server closes the response (some callers never do).
    if response.direct_passthrough:
        stream: Any = response.response  # werkzeug's FileWrapper
        response.direct_passthrough = False
        response.set_data(b"".join(stream) if response.status_code != 304 else b"")
        stream.close()
    return response


def _own_empty() -> bool:
    """A POST with no body at all (``POST /notifications/<id>/read``) that no browser
    says came from another site: it needs no ``Content-Type``. (A PUT or PATCH is
    its body: without one it is refused as ever.)

    A browser sends ``Sec-Fetch-Site`` or an ``Origin`` with every cross-site POST (a
    form, ``sendBeacon``, ``fetch`` in ``no-cors`` mode), so the door above stays
    shut; a client without either (a test client, curl, an app) has no victim's
    cookies to carry.
    """
    if request.method != "POST" or request.content_length:
        return False
    if "Transfer-Encoding" in request.headers:
        return False
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    return validation.origin_allowed(request.headers.get("Origin"), request.host, ())


def create_blueprint(settings: PushSettings) -> Blueprint:
    """A blueprint for one app, with the routes that exist under its settings."""
    # static/: the browser client, flask-push.js (and its ES-module face, flask-push.mjs),
    # and the bell's stylesheet, flask-push.css
    bp = Blueprint("push", __name__, static_folder=_STATIC, static_url_path="/static")
    routes.register(bp, routes.table())

    @bp.before_request
    def guard() -> ResponseReturnValue | None:
        request.max_content_length = settings.max_request_bytes
        # A cross-site HTML form can POST, but only as a form or text/plain;
        # requiring JSON (which needs a CORS preflight) shuts that door.
        if request.method in _WRITE_METHODS and not request.is_json and not _own_empty():
            return error_response(
                ApiError(
                    415,
                    "unsupported_media_type",
                    "Send the request with 'Content-Type: application/json'.",
                )
            )
        if nul_in_path():
            return error_response(ApiError(404, "not_found", "Nothing has that id."))
        return None

    @bp.after_request
    def static_file(response: Response) -> Response:
        if request.endpoint != "push.static" or response.status_code >= 400:
            return response
        return static_answer(response)

    @bp.before_app_request
    def routing_errors() -> ResponseReturnValue | None:
        # Unknown paths and wrong methods are decided before any blueprint is
        # chosen; answer those under our prefix in our error shape.
        err = request.routing_exception
        path = request.path
        # A redirect to the URL with its slash (``/console`` to ``/console/``) is
        # an answer, not an error: Flask sends it with its Location.
        if isinstance(err, RequestRedirect):
            return None
        # The service worker is ours too, though it lives outside the prefix: a
        # wrong method there (a POST) gets our error shape, not Flask's HTML page.
        if isinstance(err, HTTPException) and (
            path == settings.url_prefix
            or path.startswith(settings.url_prefix + "/")
            or path == settings.service_worker_url
        ):
            return http_error(err)
        return None

    @bp.errorhandler(ApiError)
    def api_error(err: ApiError) -> ResponseReturnValue:
        return error_response(err)

    @bp.errorhandler(ValidationError)
    def validation_error(err: ValidationError) -> ResponseReturnValue:
        _rollback()
        return error_response(ApiError.from_validation(err))

    @bp.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> ResponseReturnValue:
        _rollback()
        response = error_response(_from_http(err))
        if isinstance(err, MethodNotAllowed) and err.valid_methods:
            response.headers["Allow"] = ", ".join(err.valid_methods)
        # a 429 of the host's own limits (Flask-Limiter) may say when to come back
        retry_after = dict(err.get_headers()).get("Retry-After")
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    # A host's handler for a status (an HTML page for 413) is found before a handler
    # for HTTPException, even a blueprint's: ours are registered by status too
    for status in default_exceptions:
        if 400 <= status < 500:
            bp.register_error_handler(status, http_error)

    @bp.errorhandler(sa.exc.IntegrityError)
    def conflict(err: sa.exc.IntegrityError) -> ResponseReturnValue:
        # Two requests raced to create the same row; the loser gets a clean answer.
        _rollback()
        return error_response(
            ApiError(409, "conflict", "That conflicts with a concurrent change; retry.")
        )

    @bp.errorhandler(sa.exc.DBAPIError)
    @bp.errorhandler(sa.exc.TimeoutError)
    def database_error(err: Exception) -> ResponseReturnValue:
        _rollback()
        failure = database_failure(err)
        return internal_error(err) if failure is None else error_response(failure)

    @bp.errorhandler(Exception)
    def internal_error(err: Exception) -> ResponseReturnValue:
        _rollback()
        log.exception("flask-push: unhandled error in %s %r", request.method, request.path)
        return error_response(
            ApiError(500, "internal_error", "Something went wrong on the server.")
        )

    return bp


def database_failure(err: Exception) -> ApiError | None:
    """What a database error of a request means to its client, said in the log
    too: unreachable or out of connections, or taking no writes (503 with
    ``Retry-After``: an outage passes), or its tables not made yet (500); None for
    any other failure, a bug.
    The API answers it in JSON, the console on a page."""
    # sa.exc.TimeoutError: every connection of the pool is in use, for longer than
    # its pool_timeout. A connection lost (a restart or a failover since it was last
    # used) is an outage too, though a new one may answer by now.
    lost = isinstance(err, sa.exc.DBAPIError) and err.connection_invalidated
    if (
        isinstance(err, sa.exc.TimeoutError)
        or lost
        or not (found := database.diagnose(push())).answers
    ):
        log.warning(
            "flask-push: the database is unreachable (%s) in %s %r",
            database.first_line(err),
            request.method,
            request.path,
        )
        said = (
            # it may have gone while a commit was on its way: what it did is not known
            "The connection to the database was lost. Try again shortly."
            if lost
            else "The database cannot be reached right now; nothing was changed. Try again shortly."
        )
        return ApiError(
            503,
            "database_unavailable",
            said,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    if found.missing_tables:
        # the operator's mistake, said in the log; the client learns only that
        log.error("flask-push: %s", database.tables_missing_message(found.missing_tables))
        return ApiError(
            500, "database_not_set_up", "The server's database is not set up for this yet."
        )
    refused = database.refused_writes(err)
    if refused is not None:
        # a read-only replica or missing grants: what to do in the log, not a traceback;
        # to the client an outage, which a failover that ends passes
        log.error("flask-push: %s, in %s %r", refused, request.method, request.path)
        return ApiError(
            503,
            "database_unavailable",
            "The database does not take changes right now; nothing was changed. Try again shortly.",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    return None


_HTTP_CODES = {
    400: ("bad_request", "The request is malformed."),
    404: ("not_found", "There is no such endpoint."),
    405: ("method_not_allowed", "That method is not allowed here."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the request with 'Content-Type: application/json'."),
    429: ("rate_limited", "Too many requests; try again later."),
}


def http_error_response(err: HTTPException) -> Response:
    """The API's JSON answer for a routing error such as 404 (the console answers
    non-admins with it, as for any unknown path under the prefix)."""
    return error_response(_from_http(err))


def _from_http(err: HTTPException) -> ApiError:
    status = err.code or 500
    code, message = _HTTP_CODES.get(status, ("http_error", err.description or err.name))
    default = default_exceptions.get(status)
    if err.description and default is not None and err.description != default.description:
        # raised with a reason of its own (Flask-WTF's "The CSRF token is missing."):
        # that says more than ours
        message = err.description
    return ApiError(status, code, message)


def _rollback() -> None:
    push = current_app.extensions["push"].push
    push.db.session.rollback()
