"""``/installations``: mobile app installs that receive FCM or APNs pushes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Blueprint
from flask.typing import ResponseReturnValue

from .. import validation
from ..models import utcnow
from .http import body, fail, not_found, only_fields, push, user_id

_CREATE_FIELDS = frozenset(
    {
        "appId",
        "deviceToken",
        "deviceType",
        "userId",
        "subscriptions",
        "badge",
        "timeZone",
        "appVersion",
    }
)
_PATCH_FIELDS = _CREATE_FIELDS - {"appId", "deviceType"}


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/installations", view_func=register_installation, methods=["POST"])
    bp.add_url_rule("/installations/<id>", view_func=get_installation, methods=["GET"])
    bp.add_url_rule("/installations/<id>", view_func=update_installation, methods=["PATCH"])
    bp.add_url_rule("/installations/<id>", view_func=delete_installation, methods=["DELETE"])


def _owner(data: dict[str, Any], caller: str) -> str:
    """The user an installation is for: the caller, or anyone when an admin says so."""
    owner = validation.text(data.get("userId"), "userId", max_length=255) or caller
    if owner != caller and not push().current_user_is_admin():
        fail(
            403,
            "forbidden",
            "Only administrators may register an installation for another user.",
            "userId",
        )
    return owner


def _optional_values(data: dict[str, Any], device_type: str) -> dict[str, Any]:
    """The settable fields present in ``data``, checked, keyed by column."""
    checks: dict[str, tuple[str, Callable[[Any], Any]]] = {
        "appVersion": ("app_version", lambda v: validation.text(v, "appVersion", max_length=64)),
        "badge": (
            "badge",
            lambda v: None if v is None else validation.integer(v, "badge", low=0, high=2**31 - 1),
        ),
        "timeZone": ("time_zone", validation.time_zone),
        "subscriptions": (
            "subscriptions",
            lambda v: validation.topics(v, "subscriptions", max_count=push().settings.max_topics),
        ),
        "deviceToken": ("device_token", lambda v: validation.device_token(v, device_type)),
    }
    return {checks[k][0]: checks[k][1](v) for k, v in data.items() if k in checks}


def register_installation() -> ResponseReturnValue:
    """Register a device; a known (appId, deviceToken) is updated and re-bound."""
    caller = user_id()
    data = body()
    only_fields(data, _CREATE_FIELDS)
    app_id = validation.text(data.get("appId"), "appId", max_length=255, required=True)
    device_type = validation.device_type(data.get("deviceType"))
    data.setdefault("deviceToken", None)
    values = _optional_values(data, device_type)
    values.update(
        user_id=_owner(data, caller),
        device_type=device_type,
        modified_at=utcnow(),
    )

    ext = push()
    model = ext.models.Installation
    session = ext.db.session
    installation = session.scalar(
        sa.select(model).where(model.app_id == app_id, model.device_token == values["device_token"])
    )
    created = installation is None
    if installation is None:
        installation = model(app_id=app_id, subscriptions=[], created_at=values["modified_at"])
        session.add(installation)
    for name, value in values.items():
        setattr(installation, name, value)
    installation.revive()
    session.commit()
    return installation.to_json(), 201 if created else 200


def _owned(id: str) -> Any:
    ext = push()
    caller = user_id()
    installation = ext.db.session.get(ext.models.Installation, id)
    if installation is None or (installation.user_id != caller and not ext.current_user_is_admin()):
        not_found("installation")
    return installation


def get_installation(id: str) -> ResponseReturnValue:
    return _owned(id).to_json()


def update_installation(id: str) -> ResponseReturnValue:
    installation = _owned(id)
    data = body()
    only_fields(data, _PATCH_FIELDS)
    values = _optional_values(data, installation.device_type)
    if "userId" in data:
        values["user_id"] = _owner(data, user_id())
    for name, value in values.items():
        setattr(installation, name, value)
    installation.modified_at = utcnow()
    push().db.session.commit()
    return installation.to_json()


def delete_installation(id: str) -> ResponseReturnValue:
    installation = _owned(id)
    session = push().db.session
    session.delete(installation)
    session.commit()
    return "", 204
