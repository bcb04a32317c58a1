"""Routes about the API itself: the VAPID public key and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from . import openapi
from .http import require_webpush


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/vapid-public-key", view_func=vapid_public_key, methods=["GET"])
    bp.add_url_rule("/openapi.json", view_func=openapi_document, methods=["GET"])


def vapid_public_key() -> dict[str, Any]:
    return {"publicKey": require_webpush()}


def openapi_document() -> dict[str, Any]:
    settings = current_app.extensions["push"].settings
    return openapi.document(
        settings.url_prefix,
        server=request.url_root.rstrip("/"),
        max_topics=settings.max_topics,
    )
