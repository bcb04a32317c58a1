"""OpenAPI 3.1 document of the JSON API."""

from __future__ import annotations

from typing import Any


def document(prefix: str, *, server: str) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "flask-push", "version": "0.1"}, "paths": {}}
