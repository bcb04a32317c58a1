"""Answers about the API itself: the VAPID public key, where the browser finds the
app, and the OpenAPI document."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict

from .base import Documented, ResponseModel


class VapidPublicKey(ResponseModel):
    """The key browsers subscribe with."""

    public_key: Annotated[str, Documented(pattern="^[A-Za-z0-9_-]{87}$")]
    """The 65-byte uncompressed P-256 point, base64url without padding, for
    `pushManager.subscribe({applicationServerKey})`."""


class ClientConfig(ResponseModel):
    """Where the browser client finds what the app serves outside its API, as this
    request's browser sees it: below the app's mount point when it has one."""

    root: str
    """The app's root path, ending in `/` (`/`, or `/shop/` for an app mounted at
    `/shop`): the paths of notifications' links (`/orders/42`) are the app's, below it."""
    service_worker_url: str
    """The service worker's path (`PUSH_SERVICE_WORKER_URL` below the root)."""
    scope: str
    """The scope to register it with: the app's root."""


class OpenApiDocument(ResponseModel):
    """An OpenAPI 3.1 document."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"required": ["openapi", "info", "paths"]}
    )

    openapi: str
