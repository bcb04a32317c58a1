"""Routes about the API itself: the VAPID public key, where the browser client finds
the app, the OpenAPI document, and the browser client the blueprint serves from its
static folder."""

from __future__ import annotations

from typing import Any

from flask import current_app, request

from ..schemas.base import Context
from ..schemas.meta import ClientConfig, OpenApiDocument, VapidPublicKey
from ..sw import where
from . import openapi
from .http import require_webpush
from .routes import ANYONE, Answer, Routes

ROUTES = Routes("meta", who=ANYONE)


@ROUTES(
    "GET",
    "/vapid-public-key",
    "getVapidPublicKey",
    "The VAPID public key browsers subscribe with",
    answers={200: Answer("The key.", VapidPublicKey)},
    errors=(503,),
)
def vapid_public_key() -> dict[str, Any]:
    return VapidPublicKey(public_key=require_webpush()).to_json()


@ROUTES(
    "GET",
    "/client-config",
    "getClientConfig",
    "Where the browser client finds the service worker and the app's pages",
    answers={200: Answer("Paths as this request's browser sees them.", ClientConfig)},
)
def client_config() -> dict[str, Any]:
    # The client knows the API's address from its own, but not the app's root (an app
    # mounted at /shop under PUSH_URL_PREFIX /push is /shop/push, as is one at the root
    # under /shop/push), and the worker and links are below the root, not the prefix.
    service_worker_url, scope = where()
    return ClientConfig(
        root=request.script_root + "/", service_worker_url=service_worker_url, scope=scope
    ).to_json()


@ROUTES(
    "GET",
    "/openapi.json",
    "getOpenApiDocument",
    "This document",
    answers={200: Answer("An OpenAPI 3.1 document.", OpenApiDocument)},
)
def openapi_document() -> dict[str, Any]:
    settings = current_app.extensions["push"].settings
    return openapi.document(
        settings.url_prefix,
        server=request.url_root.rstrip("/"),
        limits=Context.of(settings),
        service_worker=settings.service_worker_url,
    )


ROUTES.add(
    "GET",
    "/static/<path:filename>",
    None,
    "getBrowserClient",
    "The browser client: a plain script, an ES module that loads it, and the bell's stylesheet",
    parameters=(
        {
            "name": "filename",
            "in": "path",
            "required": True,
            "description": "`flask-push.js` (sets `window.FlaskPush`), `flask-push.mjs` "
            "(exports the same functions) or `flask-push.css` (the bell's look, which the "
            "bell links by itself).",
            "schema": {
                "type": "string",
                "enum": ["flask-push.js", "flask-push.mjs", "flask-push.css"],
            },
        },
    ),
    answers={
        200: Answer(
            "The script, or the stylesheet.",
            {"application/javascript": {"type": "string"}, "text/css": {"type": "string"}},
        )
    },
    errors=(404,),
)
