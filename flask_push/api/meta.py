"""Routes about the API itself: the VAPID public key and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from . import openapi
from .http import fail


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/vapid-public-key", view_func=vapid_public_key, methods=["GET"])
    bp.add_url_rule("/openapi.json", view_func=openapi_document, methods=["GET"])


def vapid_public_key() -> dict[str, Any]:
    key = current_app.extensions["push"].settings.vapid_public_key
    if key is None:
        fail(404, "webpush_not_configured",
             "Web Push is not set up on this server: set PUSH_VAPID_PRIVATE_KEY and "
             "PUSH_VAPID_SUBJECT (run `flask push vapid-keys` to make a key).")
    return {"publicKey": key}


def openapi_document() -> dict[str, Any]:
    settings = current_app.extensions["push"].settings
    return openapi.document(settings.url_prefix, server=request.host_url.rstrip("/"))
