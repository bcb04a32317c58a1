"""The service worker: ``templates/flask_push/sw.js`` rendered and served by the app.

It is served at ``PUSH_SERVICE_WORKER_URL`` on the app itself rather than under the
prefixed ``push`` blueprint, because a service worker controls only the pages at or
below its script's directory: ``/push-sw.js`` can control the whole site.

Hosts customize it by putting their own ``flask_push/sw.js`` in the app's templates
folder: Flask looks there before the template folders of blueprints.
"""

from __future__ import annotations

import posixpath

from flask import Blueprint, Response, current_app, render_template, request

from .config import PushSettings

#: the template hosts may override, under their own ``templates/`` folder
TEMPLATE = "flask_push/sw.js"


def create_blueprint(settings: PushSettings) -> Blueprint:
    """A blueprint without a prefix that serves the worker at its configured URL.

    It exists for the route and for ``templates/``, which it adds after the app's
    own template folder.
    """
    bp = Blueprint("push_sw", "flask_push", template_folder="templates")
    bp.add_url_rule(settings.service_worker_url, "service_worker", service_worker)
    return bp


def where() -> tuple[str, str]:
    """The worker's address and scope as this request's browser sees them: below the
    app's mount point (``SCRIPT_NAME``, a ``DispatcherMiddleware`` mount, ProxyFix's
    ``X-Forwarded-Prefix``), whose root is the scope, so the worker controls the
    app's pages and no other app's on the same host."""
    settings: PushSettings = current_app.extensions["push"].settings
    root = request.script_root
    return root + settings.service_worker_url, root + "/"


def service_worker() -> Response:
    settings: PushSettings = current_app.extensions["push"].settings
    root = request.script_root
    script = render_template(
        TEMPLATE,
        prefix=root + settings.url_prefix,
        vapid_public_key=settings.vapid_public_key,
        scope=where()[1],
    )
    response = Response(script, mimetype="application/javascript")
    # Browsers check for a new worker on navigation anyway, but an HTTP cache in
    # between could pin an old one for a day (the limit browsers apply).
    response.headers["Cache-Control"] = "no-cache"
    # A script below the root may control the whole site only if the server says so.
    if posixpath.dirname(settings.service_worker_url) != "/":
        response.headers["Service-Worker-Allowed"] = root + "/"
    return response
