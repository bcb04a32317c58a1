"""The test send's preview: what each provider would send for a notification.

The notification is checked as ``push.send`` checks it, and each payload is made
by the provider's own :meth:`~flask_push.providers.base.Provider.preview`, which
calls ``build_payload``: the preview and the real send share one mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import current_app

from .. import app_providers
from ..message import DeviceTarget, OutgoingPush, WebPushTarget
from ..models import ACTIVE, DEAD
from ..providers import kind_for_platform, kinds, provider_class
from ..schemas.base import Context
from ..schemas.errors import by_alias, parse
from ..schemas.notification import MessageNotification
from ..sending import notification_from_json
from ..targets import dead_detail

#: stand-ins for what only the send makes; they show where those values go
MESSAGE_ID = "msg_ASSIGNED_WHEN_SENT"
CLICK_TOKEN = "signed-per-delivery-when-sent"
DELIVERY_ID = "0"


@dataclass(frozen=True)
class Preview:
    """One provider's request for one target, or why there is none."""

    kind: str
    target_id: str | None
    #: JSON-ready request parts (headers, payload, ...), or None
    request: dict[str, Any] | None
    note: str | None = None


def _targets(session: Any, models: Any, user_id: str | None, target_id: str | None) -> list[Any]:
    """An active subscription and one installation per device type of the user, or
    the one target ``target_id`` whatever its status, as ``(kind, row)``."""
    s, i = models.Subscription, models.Installation
    if target_id:
        found: list[Any] = [
            *session.scalars(sa.select(s).where(s.id == target_id)),
            *session.scalars(sa.select(i).where(i.id == target_id)),
        ]
    else:
        found = [
            *session.scalars(
                sa.select(s).where(s.user_id == user_id, s.status == ACTIVE).order_by(s.id.desc())
            ),
            *session.scalars(
                sa.select(i).where(i.user_id == user_id, i.status == ACTIVE).order_by(i.id.desc())
            ),
        ]
    chosen: dict[str, Any] = {}
    for row in found:
        kind = kind_for_platform(row.device_type) if hasattr(row, "device_token") else "webpush"
        chosen.setdefault(kind, row)
    return list(chosen.items())


def previews(
    state: Any, form: dict[str, Any], user_id: str | None, target_id: str | None
) -> list[Preview]:
    """What would go out for the notification of ``form`` (``push.send``'s keywords).

    :raises ValidationError: when ``push.send`` would refuse the notification.
    """
    settings = state.settings
    given = parse(MessageNotification, by_alias(MessageNotification, form), Context.of(settings))
    notification = notification_from_json(given.shown(settings.default_ttl))
    # built as the dispatcher builds them (with the options the settings give, such
    # as plain-http endpoints), so that a preview refuses what a send would refuse
    providers = {
        kind: provider_class(kind).from_settings(options, **kinds()[kind].options(settings))
        for kind, options in settings.providers.items()
    }
    push = state.push
    found = dict(_targets(push.db.session, push.models, user_id, target_id))
    if target_id and not found:
        # the id names nothing: each provider's panel says so, rather than that the
        # id has no target of its kind
        note = f"Nothing goes out: no subscription or installation with the id {target_id}."
        return [Preview(kind, None, None, note) for kind in kinds()]
    result = []
    for kind in kinds():
        row = found.get(kind)
        if row is not None and row.status == DEAD:
            # a target picked by its id can be dead: the send skips it, so a payload
            # shown for it would be one that never goes out
            what = "installation" if hasattr(row, "device_token") else "subscription"
            note = f"Nothing goes out: this {what} is dead. {dead_detail(row)}"
            result.append(Preview(kind, row.id, None, note))
            continue
        provider = providers.get(kind)
        stored = _stored_provider(push, kind, row, settings) if row is not None else None
        if isinstance(stored, str) and row is not None:
            result.append(Preview(kind, row.id, None, f"The send would fail: {stored}"))
            continue
        if stored is not None:
            provider = stored
        if provider is None:
            note = f"No {kind} provider is configured."
            result.append(Preview(kind, row.id if row else None, None, note))
            continue
        if row is None:
            who = f"target {target_id}" if target_id else f"user {user_id}"
            result.append(
                Preview(kind, None, None, f"Nothing goes out: {who} has no {kind} target.")
            )
            continue
        target: WebPushTarget | DeviceTarget
        if kinds()[kind].targets == "subscription":
            target = WebPushTarget(row.endpoint, row.p256dh, row.auth)
            click: str | None = CLICK_TOKEN
        else:
            target = DeviceTarget(row.device_token)
            click = None
        outgoing = OutgoingPush(DELIVERY_ID, MESSAGE_ID, notification, target, click)
        try:
            request = provider.preview(outgoing)
        except Exception as err:  # noqa: BLE001 - shown: the send would fail the same way
            result.append(Preview(kind, row.id, None, f"The send would fail: {err}"))
            continue
        result.append(Preview(kind, row.id, request))
    return result


def _stored_provider(push: Any, kind: str, row: Any, settings: Any) -> Any:
    """The provider stored for the app of installation ``row`` (``POST /providers``),
    which its pushes go through as the dispatcher sends them; why it cannot send,
    as text; or None when the app has none (the one of ``app.config`` sends)."""
    app_id = getattr(row, "app_id", None)
    if app_id is None:
        return None
    stored = app_providers.stored_settings(push.db.session, push.models, (kind, app_id))
    if stored is None:
        return None
    try:
        return provider_class(kind).from_settings(
            app_providers.delivery_settings(kind, stored, current_app.config),
            **kinds()[kind].options(settings),
        )
    except Exception as err:  # noqa: BLE001 - shown: its pushes fail the same way
        return f"the {kind} provider stored for app {app_id!r} cannot send: {err}"
