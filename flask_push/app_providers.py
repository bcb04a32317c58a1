"""Providers stored per app id by ``/providers`` (LoopBack's application push
settings), as delivery uses them.

An installation of an app whose id has a stored provider of its kind (``fcm`` for
Android, ``apns`` for iOS) is sent with that provider's credentials; every other
installation, and every browser, with the provider of ``app.config``. Where the
platform's service is (``baseUrl``) belongs to the deployment, not to an
administrator's body: a stored provider sends to the address ``app.config`` gives
its kind (``PUSH_FCM_BASE_URL``, ``PUSH_APNS_BASE_URL``), or to the platform's own,
and an FCM service account's ``token_uri`` must be Google's unless ``app.config``
points FCM at a service of its own (a test service).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from .errors import ValidationError
from .providers import kinds

#: (kind, app id)
Key = tuple[str, str]

#: where an FCM service account asks for its access tokens
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
_BASE_URL = "baseUrl"


def sends_for_apps(kind: str) -> bool:
    """Whether a stored provider of ``kind`` sends: its targets carry an app id."""
    found = kinds().get(kind)
    return found is not None and found.targets == "device"


def stored_versions(session: Any, models: Any) -> dict[Key, Any]:
    """When each stored provider that delivery uses last changed."""
    p = models.Provider
    rows = session.execute(sa.select(p.kind, p.app_id, p.modified_at))
    return {(kind, app_id): at for kind, app_id, at in rows if sends_for_apps(kind)}


def stored_settings(session: Any, models: Any, key: Key) -> dict[str, Any] | None:
    """The settings and secrets of the stored provider ``key``, or None."""
    p = models.Provider
    row = session.execute(
        sa.select(p.settings, p.secrets).where(p.kind == key[0], p.app_id == key[1])
    ).first()
    return None if row is None else {**(row.settings or {}), **(row.secrets or {})}


def delivery_settings(
    kind: str, stored: Mapping[str, Any], config: Mapping[str, Any]
) -> dict[str, Any]:
    """The settings a stored provider of ``kind`` sends with: its own, at the address
    ``config`` (``app.config``) gives the kind.

    :raises ValidationError: ``invalid_setting`` for an FCM ``token_uri`` that is not
        Google's while ``app.config`` points FCM at the platform itself.
    """
    settings = {name: value for name, value in stored.items() if name != _BASE_URL}
    base_url = _config_base_url(kind, config)
    if base_url is not None:
        settings[_BASE_URL] = base_url
    check_token_uri(kind, settings, config)
    return settings


def shown_settings(
    kind: str, stored: Mapping[str, Any], config: Mapping[str, Any]
) -> dict[str, Any]:
    """A stored provider's public settings as it sends: at the address ``config``
    gives the kind, when it gives one (else the platform's own, as stored)."""
    shown = dict(stored)
    base_url = _config_base_url(kind, config)
    if base_url is not None:
        shown[_BASE_URL] = base_url
    return shown


def check_token_uri(kind: str, settings: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Refuse an FCM service account (normalized: a dict) that would fetch its tokens
    anywhere but Google, unless ``app.config`` sends FCM to a service of its own: the
    server posts a signed assertion to that address."""
    if kind != "fcm" or _config_base_url(kind, config) is not None:
        return
    credentials = settings.get("credentials")
    token_uri = credentials.get("token_uri") if isinstance(credentials, Mapping) else None
    if token_uri not in (None, GOOGLE_TOKEN_URI):
        raise ValidationError(
            f"has a token_uri other than {GOOGLE_TOKEN_URI!r}: a stored provider fetches "
            "its tokens from Google (unless app.config sets PUSH_FCM_BASE_URL)",
            field="credentials",
            code="invalid_setting",
        )


def check_no_base_url(settings: Any) -> None:
    """Refuse a ``baseUrl`` in a body of ``/providers``: where the service is comes
    from ``app.config``."""
    if isinstance(settings, Mapping) and settings.get(_BASE_URL) is not None:
        raise ValidationError(
            "is where the platform's service is, which app.config says (PUSH_FCM_BASE_URL, "
            "PUSH_APNS_BASE_URL); a stored provider sends there",
            field=f"settings.{_BASE_URL}",
            code="invalid_setting",
        )


def _config_base_url(kind: str, config: Mapping[str, Any]) -> str | None:
    found = kinds().get(kind)
    if found is None:
        return None
    for setting in found.settings:
        if setting.name == _BASE_URL:
            value = config.get(setting.config_key)
            return str(value) if value else None
    return None
