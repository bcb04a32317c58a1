"""``/providers``: push credentials per app id, for administrators. Secrets are write-only."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import current_app
from flask.typing import ResponseReturnValue

from .. import app_providers, credentials
from ..database import commit_keeping
from ..errors import ProviderNotInstalled, ValidationError
from ..models import utcnow
from ..providers import kind as registered
from ..schemas.errors import parse
from ..schemas.provider import (
    CREATE,
    Provider,
    ProviderCreate,
    ProviderHead,
    ProviderList,
    ProviderUpdate,
)
from .http import body, context, fail, not_found, parse_body, push, require_admin
from .routes import ADMIN, Answer, Routes

ROUTES = Routes("providers", who=ADMIN)
_LINKS = ("getProvider", "updateProvider", "deleteProvider")
_ONE = "The provider's id."


def _settings_error(err: ValidationError, settings: Any) -> ValidationError:
    """A refused setting, in the words ``init_app`` uses for config: ``missing_setting``
    for one left out (or empty), ``invalid_setting`` for a wrong one.

    An unknown setting is named on its own (``color``, not ``settings.color``), as it
    always was.
    """
    field = err.field or ""
    name = field.removeprefix("settings.")
    if err.code == "unknown_field":
        return ValidationError(err.message, field=name, code=err.code)
    if err.code == "required" or (isinstance(settings, dict) and settings.get(name) in (None, "")):
        return ValidationError("is required", field=field, code="missing_setting")
    return ValidationError(err.message, field=field, code="invalid_setting")


def _apply(provider: Any, kind: credentials.ProviderKind, data: dict[str, Any]) -> None:
    """Check ``data`` (a whole body of ``kind``) as ``init_app`` checks config, then split
    off the secrets."""
    try:
        kind.check_installed()
    except ProviderNotInstalled as err:
        fail(400, "provider_not_installed", str(err), "kind")
    try:
        parse(CREATE[kind.name], data, context())
    except ValidationError as err:
        raise _settings_error(err, data.get("settings")) from None
    try:
        normalized = kind.normalize(data["settings"])
        app_providers.check_token_uri(kind.name, normalized, current_app.config)
    except ValidationError as err:
        raise ValidationError(err.message, field=f"settings.{err.field}", code=err.code) from err
    provider.settings = {
        k: v for k, v in normalized.items() if k not in kind.secret_names and v is not None
    }
    provider.secrets = {k: v for k, v in normalized.items() if k in kind.secret_names}
    provider.modified_at = utcnow()


def _chosen(kind: credentials.ProviderKind, stored: dict[str, Any]) -> dict[str, Any]:
    """``stored`` without the settings that hold only what the others imply (FCM's
    ``projectId``, which its credentials name): a PATCH of the others works them
    out again, as a POST would. (New credentials of another Firebase project kept
    the old project's id, and FCM refused every push.)"""
    chosen = dict(stored)
    for setting in kind.settings:
        if setting.secret or setting.name not in chosen:
            continue
        without = {k: v for k, v in chosen.items() if k != setting.name}
        try:
            implied = kind.normalize(without).get(setting.name)
        except ValidationError:
            continue  # needed: the others do not imply it
        if implied == chosen[setting.name]:
            del chosen[setting.name]
    return chosen


def _shown(row: Any) -> Provider:
    """A stored provider as it sends: at the address app.config gives its kind."""
    settings = app_providers.shown_settings(row.kind, row.settings, current_app.config)
    return Provider.of(row, settings)


@ROUTES(
    "GET",
    "/providers",
    "listProviders",
    "Every provider, by appId and kind",
    answers={200: Answer("All providers.", ProviderList)},
    errors=(403,),
)
def list_providers() -> ResponseReturnValue:
    require_admin()
    ext = push()
    model = ext.models.Provider
    rows = ext.db.session.scalars(sa.select(model).order_by(model.app_id, model.kind)).all()
    return ProviderList(total_count=len(rows), items=[_shown(row) for row in rows]).to_json()


@ROUTES(
    "POST",
    "/providers",
    "createProvider",
    "Add push credentials for an app id",
    body=ProviderCreate,
    answers={201: Answer("Created.", Provider, _LINKS)},
    errors=(403, 409),
)
def create_provider() -> ResponseReturnValue:
    require_admin()
    data = body()
    head = parse(ProviderHead, data, context())
    kind = registered(head.kind)
    ext = push()
    model = ext.models.Provider
    session = ext.db.session
    if session.scalar(
        sa.select(model.id).where(model.app_id == head.app_id, model.kind == kind.name)
    ):
        fail(
            409,
            "conflict",
            f"appId {head.app_id!r} already has a {kind.name} provider; PATCH it instead.",
        )
    app_providers.check_no_base_url(head.settings)
    provider = model(app_id=head.app_id, kind=kind.name)
    _apply(provider, kind, {**data, "settings": head.settings})
    session.add(provider)
    commit_keeping(session, provider)
    return _shown(provider).to_json(), 201


def _provider(id: str) -> Any:
    require_admin()
    ext = push()
    provider = ext.db.session.get(ext.models.Provider, id)
    if provider is None:
        not_found("provider")
    return provider


@ROUTES(
    "GET",
    "/providers/<id>",
    "getProvider",
    "One provider",
    id_description=_ONE,
    answers={200: Answer("The provider.", Provider)},
    errors=(403, 404),
)
def get_provider(id: str) -> ResponseReturnValue:
    return _shown(_provider(id)).to_json()


@ROUTES(
    "PATCH",
    "/providers/<id>",
    "updateProvider",
    "Change a provider's settings",
    id_description=_ONE,
    body=ProviderUpdate,
    answers={200: Answer("The changed provider.", Provider)},
    errors=(403, 404),
)
def update_provider(id: str) -> ResponseReturnValue:
    """Change some settings; secrets left out are kept, derived ones recomputed."""
    provider = _provider(id)
    given = parse_body(ProviderUpdate)
    app_providers.check_no_base_url(given.settings)
    kind = registered(provider.kind)
    stored = {
        k: v
        for k, v in {**provider.settings, **provider.secrets}.items()
        if k not in kind.derived_names
    }
    merged = {**_chosen(kind, stored), **given.settings}
    _apply(provider, kind, {"appId": provider.app_id, "kind": kind.name, "settings": merged})
    commit_keeping(push().db.session, provider)
    return _shown(provider).to_json()


@ROUTES(
    "DELETE",
    "/providers/<id>",
    "deleteProvider",
    "Remove a provider",
    id_description=_ONE,
    answers={204: Answer("Deleted.")},
    errors=(403, 404),
)
def delete_provider(id: str) -> ResponseReturnValue:
    provider = _provider(id)
    session = push().db.session
    session.delete(provider)
    session.commit()
    return "", 204
