"""Who may see the console, and how its answers and actions are protected.

- Only administrators (the host's ``admin_loader``) see it; anyone else gets the
  API's own 404 for an unknown path, so the console's existence is not revealed.
- Every answer carries a strict Content-Security-Policy (scripts and styles from
  files of the console only, nothing inline), ``X-Frame-Options: DENY``,
  ``Cache-Control: no-store`` and ``Referrer-Policy: same-origin``.
- Every action is a POST with a CSRF token: a double-submit token signed with the
  app's ``SECRET_KEY`` (itsdangerous, which Flask depends on), bound to a random
  value in a same-site cookie and to the admin's user id, and refused when the
  browser says the request came from another site (``Sec-Fetch-Site``, ``Origin``).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from flask import Response, current_app, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..validation import origin_allowed

#: the console's Content-Security-Policy: nothing inline, nothing from elsewhere
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
#: the cookie holding the random half of the double-submit token
CSRF_COOKIE = "flask_push_console_csrf"
#: the form field holding the signed half
CSRF_FIELD = "csrf_token"
#: a page's token is good this long (a console tab left open over a working day)
CSRF_MAX_AGE = 12 * 3600
#: what an admin sees on every console page while the app has no SECRET_KEY
NO_SECRET = (
    "The console needs the app's SECRET_KEY to protect its actions: set "
    "app.config['SECRET_KEY'] to a long random value and restart."
)
_SALT = "flask-push-console-csrf"
#: ``Sec-Fetch-Site`` values of requests a person made on the console itself
#: ("none": typed in or bookmarked, which a POST never is, but harmless)
_SAME_SITE = frozenset({"same-origin", "none"})


class Refused(Exception):
    """An action refused before it did anything; ``status`` and a sentence for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def secret_key() -> str | bytes | None:
    key = current_app.config.get("SECRET_KEY")
    return key if isinstance(key, (str, bytes)) and key else None


def _serializer() -> URLSafeTimedSerializer:
    key = secret_key()
    if key is None:
        raise Refused(500, NO_SECRET)
    return URLSafeTimedSerializer(key, salt=_SALT)


def _admin_id() -> str:
    user_id = current_app.extensions["push"].push.current_user_id()
    return "" if user_id is None else user_id


def cookie_nonce() -> str | None:
    value = request.cookies.get(CSRF_COOKIE)
    # Ours are ASCII (new_nonce); one that is not was set by someone else (a sibling
    # host, for the whole domain), and compare_digest refuses non-ASCII text.
    return value if value and len(value) <= 100 and value.isascii() else None


def csrf_token(nonce: str) -> str:
    """The signed token a form carries for the browser whose cookie holds ``nonce``."""
    return str(_serializer().dumps({"n": nonce, "u": _admin_id()}))


def check_post() -> None:
    """Refuse (403) a POST that did not come from a console page of this admin.

    :raises Refused: and nothing has been changed.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in _SAME_SITE:
        raise Refused(403, f"Refused: the request came from another site ({site}).")
    # the websocket's rule, with no other origin allowed
    if not origin_allowed(request.headers.get("Origin"), request.host, ()):
        raise Refused(403, "Refused: the request came from another origin.")
    serializer = _serializer()
    nonce = cookie_nonce()
    given = request.form.get(CSRF_FIELD, "")
    try:
        value: Any = serializer.loads(given, max_age=CSRF_MAX_AGE)
    except BadSignature:
        value = None
    if (
        nonce is None
        or not isinstance(value, dict)
        or not isinstance(value.get("n"), str)
        or not hmac.compare_digest(value["n"], nonce)
        or value.get("u") != _admin_id()
    ):
        raise Refused(
            403, "Refused: the form's security token is missing or stale. Reload the page."
        )


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def protect(response: Response, nonce: str | None, path: str) -> Response:
    """Add the security headers, and set the CSRF cookie when it is new."""
    response.headers.update(HEADERS)
    if nonce is not None:
        response.set_cookie(
            CSRF_COOKIE,
            nonce,
            path=request.script_root + path,
            secure=request.is_secure,
            httponly=True,
            samesite="Strict",
        )
    return response
