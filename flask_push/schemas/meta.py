"""Answers about the API itself: the VAPID public key and the OpenAPI document."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict

from .base import Documented, ResponseModel


class VapidPublicKey(ResponseModel):
    """The key browsers subscribe with."""

    public_key: Annotated[str, Documented(pattern="^[A-Za-z0-9_-]{87}$")]
    """The 65-byte uncompressed P-256 point, base64url without padding, for
    `pushManager.subscribe({applicationServerKey})`."""


class OpenApiDocument(ResponseModel):
    """An OpenAPI 3.1 document."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"required": ["openapi", "info", "paths"]}
    )

    openapi: str
