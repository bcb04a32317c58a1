"""``/providers``: push credentials per app id, for administrators. Secrets are write-only."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint
from flask.typing import ResponseReturnValue

from .. import credentials, validation
from ..errors import ProviderNotInstalled, ValidationError
from ..models import utcnow
from .http import body, fail, not_found, only_fields, push, require_admin


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/providers", view_func=list_providers, methods=["GET"])
    bp.add_url_rule("/providers", view_func=create_provider, methods=["POST"])
    bp.add_url_rule("/providers/<id>", view_func=get_provider, methods=["GET"])
    bp.add_url_rule("/providers/<id>", view_func=update_provider, methods=["PATCH"])
    bp.add_url_rule("/providers/<id>", view_func=delete_provider, methods=["DELETE"])


def _apply(provider: Any, kind: credentials.ProviderKind, settings: dict[str, Any]) -> None:
    """Check ``settings`` as ``init_app`` checks config, then split off the secrets."""
    try:
        kind.check_installed()
    except ProviderNotInstalled as err:
        fail(400, "provider_not_installed", str(err), "kind")
    only_fields(settings, {s.name for s in kind.settings})
    try:
        normalized = kind.normalize(settings)
    except ValidationError as err:
        raise ValidationError(err.message, field=f"settings.{err.field}", code=err.code) from err
    provider.settings = {
        k: v for k, v in normalized.items() if k not in kind.secret_names and v is not None
    }
    provider.secrets = {k: v for k, v in normalized.items() if k in kind.secret_names}
    provider.modified_at = utcnow()


def _settings(data: dict[str, Any]) -> dict[str, Any]:
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise ValidationError("must be an object", field="settings", code="invalid_type")
    return settings


def list_providers() -> ResponseReturnValue:
    require_admin()
    ext = push()
    model = ext.models.Provider
    rows = ext.db.session.scalars(sa.select(model).order_by(model.app_id, model.kind)).all()
    return {"totalCount": len(rows), "items": [row.to_json() for row in rows]}


def create_provider() -> ResponseReturnValue:
    require_admin()
    data = body()
    only_fields(data, {"appId", "kind", "settings"})
    app_id = validation.text(data.get("appId"), "appId", max_length=255, required=True)
    kind_name = data.get("kind")
    kind = credentials.KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        fail(400, "invalid_value", f"must be one of {sorted(credentials.KINDS)}", "kind")
    ext = push()
    model = ext.models.Provider
    session = ext.db.session
    if session.scalar(sa.select(model.id).where(model.app_id == app_id, model.kind == kind.name)):
        fail(
            409,
            "conflict",
            f"appId {app_id!r} already has a {kind.name} provider; PATCH it instead.",
        )
    provider = model(app_id=app_id, kind=kind.name)
    _apply(provider, kind, _settings(data))
    session.add(provider)
    session.commit()
    return provider.to_json(), 201


def _provider(id: str) -> Any:
    require_admin()
    ext = push()
    provider = ext.db.session.get(ext.models.Provider, id)
    if provider is None:
        not_found("provider")
    return provider


def get_provider(id: str) -> ResponseReturnValue:
    return _provider(id).to_json()


def update_provider(id: str) -> ResponseReturnValue:
    """Change some settings; secrets left out are kept, derived ones recomputed."""
    provider = _provider(id)
    data = body()
    only_fields(data, {"settings"})
    kind = credentials.KINDS[provider.kind]
    stored = {
        k: v
        for k, v in {**provider.settings, **provider.secrets}.items()
        if k not in kind.derived_names
    }
    _apply(provider, kind, {**stored, **_settings(data)})
    push().db.session.commit()
    return provider.to_json()


def delete_provider(id: str) -> ResponseReturnValue:
    provider = _provider(id)
    session = push().db.session
    session.delete(provider)
    session.commit()
    return "", 204
