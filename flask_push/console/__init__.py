"""The operator console at ``<PUSH_URL_PREFIX>/console`` (``PUSH_CONSOLE``).

Server-rendered pages (``templates/flask_push/console/``, which a host overrides
by putting its own files at the same path in its templates folder) with a little
plain JavaScript and a stylesheet served by the console itself: no build step, and
everything works under the strict Content-Security-Policy of :mod:`.guard`.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, make_response, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, NotFound

from ..api import database_failure, http_error_response, static_answer
from ..api.http import error_response, nul_in_path
from ..config import PushSettings
from ..errors import ValidationError
from . import guard, views

_STATIC = str(Path(__file__).resolve().parent.parent / "static" / "console")


def create_blueprint(settings: PushSettings) -> Blueprint:
    """The console's blueprint, to register at ``<prefix>/console``."""
    bp = Blueprint(
        "push_console",
        __name__,
        template_folder="../templates",
        static_folder=_STATIC,
        static_url_path="/static",
    )
    views.register(bp)
    path = settings.url_prefix.rstrip("/") + "/console"

    @bp.before_app_request
    def hidden() -> ResponseReturnValue | None:
        # A wrong method on a console URL is a routing error, decided before the
        # blueprint's own guard runs: answered as any unknown path for non-admins.
        err = request.routing_exception
        if err is None or not (request.path == path or request.path.startswith(path + "/")):
            return None
        if current_app.extensions["push"].push.current_user_is_admin():
            if isinstance(err, NotFound):
                # a mistyped console address: a console page that says so, with
                # the way back, rather than the API's JSON
                page = make_response(views.missing_page())
                return guard.protect(page, views.page_nonce(), path)
            return None
        return http_error_response(NotFound())

    @bp.before_request
    def admins_only() -> ResponseReturnValue | None:
        push = current_app.extensions["push"].push
        if not push.current_user_is_admin():
            # The API's own answer for a path it does not have, with its headers
            # only (see ``headers``): nothing to see here.
            return http_error_response(NotFound())
        g.push_console_admin = True
        if guard.secret_key() is None:
            return views.refused(guard.Refused(500, guard.NO_SECRET))
        if request.method == "POST":
            try:
                guard.check_post()
            except guard.Refused as err:
                return views.refused(err)
        if nul_in_path():
            return views.refused(guard.Refused(404, "Nothing has that id."))
        fields = [request.args, request.form] if request.method == "POST" else [request.args]
        if any("\x00" in value for given in fields for _, value in given.items(multi=True)):
            return views.refused(
                guard.Refused(
                    400, "A field holds a NUL character (\\x00), which no id or text may."
                )
            )
        return None

    @bp.errorhandler(ValidationError)
    def refused_value(err: ValidationError) -> ResponseReturnValue:
        # a bad filter or id in the URL: said on a page, as the API says it in JSON
        current_app.extensions["push"].push.db.session.rollback()
        field = f"{err.field}: " if err.field else ""
        return views.refused(guard.Refused(400, f"{field}{err.message}"))

    @bp.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> ResponseReturnValue:
        # raised inside a view (static/ lacks the file, a Range past its end): said as
        # a mistyped console address is, not with Werkzeug's bare HTML page
        if isinstance(err, NotFound) and g.get("push_console_admin"):
            return views.missing_page()
        return http_error_response(err)

    @bp.errorhandler(sa.exc.DBAPIError)
    @bp.errorhandler(sa.exc.TimeoutError)
    def database_error(err: Exception) -> ResponseReturnValue:
        # an outage or tables not made yet: said on a page, as the API says it in
        # JSON, rather than the server's bare "Internal Server Error"
        current_app.extensions["push"].push.db.session.rollback()
        failure = database_failure(err)
        if failure is None:
            raise err  # a bug: Flask's 500, with the traceback in the log
        if not g.get("push_console_admin"):
            # failed before the caller was known to be an admin (the host's admin
            # check reads the database): the API's answer, which tells no console
            return error_response(failure)
        page = make_response(views.refused(guard.Refused(failure.status, failure.message)))
        page.headers.update(failure.headers)
        return page

    @bp.after_request
    def headers(response: Response) -> Response:
        if not g.get("push_console_admin"):
            return response  # as an unknown path answers: the console's headers would tell
        nonce = None if guard.cookie_nonce() else views.page_nonce()
        if request.endpoint == "push_console.static" and response.status_code < 400:
            static_answer(response)
        return guard.protect(response, nonce, path)

    return bp
