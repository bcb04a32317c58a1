"""The simulated phones: what each of a shopper's devices shows, built from what the
demo's fake FCM and APNs services received for it.

An Android phone shows one notification per ``android.notification.tag`` (the newest
replaces the last, as Android does), with the activity's progress from
``data.activity``. An iPhone shows a Live Activity card per order: the newest
``content-state`` the fake APNs holds for the activity's own token
(``FakeAPNs.live_activities``), or, until the phone has registered that token, the
start that came by its push-to-start token; its other notifications are replaced by
``apns-collapse-id``.

The phone's app itself is simulated by the Phones page's script: an iPhone has a
push-to-start token, and once a push-to-start has started an order's Live Activity
the page registers that activity's own token through flask-push's
``POST /push/installations/<id>/activities``, as ActivityKit's ``pushTokenUpdates``
would have the app do (:func:`to_register` says which).
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa
from flask import current_app

from .extensions import db, push
from .models import STATUS_LABELS

#: the Live Activity type the app starts by push (ActivityKit's ``attributes-type``)
ATTRIBUTES_TYPE = "OrderAttributes"


def installations(user_id: str | None = None) -> list[Any]:
    """The installations (of ``user_id``), newest first."""
    model = push.models.Installation
    query = sa.select(model).order_by(model.created_at.desc())
    if user_id is not None:
        query = query.where(model.user_id == user_id)
    return list(db.session.scalars(query))


def fakes() -> dict[str, Any] | None:
    """The demo's fake FCM and APNs services (None: not running, as under ``flask run``)."""
    return current_app.extensions.get("demo_fakes")


def _activity_tokens(ids: list[str]) -> dict[str, dict[str, str]]:
    """Each installation's Live Activity tokens: installation id -> activity id -> token."""
    model = push.models.ActivityToken
    found: dict[str, dict[str, str]] = {}
    if ids:
        for row in db.session.scalars(sa.select(model).where(model.installation_id.in_(ids))):
            found.setdefault(row.installation_id, {})[row.activity_id] = row.push_token
    return found


def received(user_id: str) -> list[dict[str, Any]]:
    """What the fake FCM and APNs services accepted for this user's devices (their
    device tokens, push-to-start tokens and Live Activity tokens), newest first."""
    services = fakes()
    if not services:
        return []
    devices = installations(user_id)
    tokens = {row.device_token: row for row in devices}
    tokens.update({row.push_to_start_token: row for row in devices if row.push_to_start_token})
    by_id = {row.id: row for row in devices}
    for installation, activities in _activity_tokens(list(by_id)).items():
        tokens.update({token: by_id[installation] for token in activities.values()})
    seen: list[dict[str, Any]] = []
    for message in services["fcm"].messages:
        if message.token in tokens:
            note = message.notification or {}
            seen.append(
                {
                    "service": "FCM",
                    "device": tokens[message.token].id,
                    "title": note.get("title"),
                    "body": note.get("body"),
                    "at": message.received_at,
                    "raw": message.message,
                }
            )
    for pushed in services["apns"].notifications:
        if pushed.device_token not in tokens:
            continue
        alert = pushed.aps.get("alert")
        alert = alert if isinstance(alert, dict) else {"title": alert}
        row = {
            "service": "APNs",
            "device": tokens[pushed.device_token].id,
            "title": alert.get("title"),
            "body": alert.get("body"),
            "at": pushed.received_at,
            "raw": {"headers": pushed.headers, "payload": pushed.payload},
        }
        if pushed.push_type == "liveactivity":
            state = pushed.aps.get("content-state") or {}
            event = pushed.aps.get("event")
            started = pushed.device_token == tokens[pushed.device_token].push_to_start_token
            by = "the push-to-start token" if started else "the activity's own token"
            # a start or an end also shows an alert; an update only changes the card
            words = _state_words(state)
            row["kind"] = (
                f"Live Activity {event}, by {by}: {words}" if row["title"] else f"By {by}: {words}"
            )
            row["title"] = row["title"] or f"Live Activity {event}"
        seen.append(row)
    seen.sort(key=lambda row: row["at"], reverse=True)
    return seen


def _state_words(state: dict[str, Any]) -> str:
    label = STATUS_LABELS.get(str(state.get("status")), str(state.get("status", "")))
    words = [label]
    if state.get("step") and state.get("steps"):
        words.append(f"step {state['step']} of {state['steps']}")
    if state.get("eta"):
        words.append(f"ETA {state['eta']} UTC")
    return " · ".join(words)


def _progress(state: dict[str, Any]) -> dict[str, Any] | None:
    step, steps = state.get("step"), state.get("steps")
    if not isinstance(step, int) or not isinstance(steps, int) or steps <= 0:
        return None
    return {"step": step, "steps": steps, "percent": round(100 * min(step, steps) / steps)}


def screens(user_id: str) -> list[dict[str, Any]]:
    """What each of the user's devices shows, newest device first."""
    services = fakes()
    devices = installations(user_id)
    tokens = _activity_tokens([row.id for row in devices])
    shown = []
    for row in devices:
        screen: dict[str, Any] = {
            "id": row.id,
            "kind": row.device_type,
            "token": row.device_token,
            "pushToStart": row.push_to_start_token,
            "activities": [],
            "notifications": [],
        }
        if services and row.device_type == "android":
            screen["notifications"] = _android(services["fcm"], row.device_token)
        elif services and row.device_type == "ios":
            screen["activities"] = _live_activities(services["apns"], row, tokens.get(row.id, {}))
            screen["notifications"] = _ios_alerts(services["apns"], row.device_token)
        shown.append(screen)
    return shown


def _android(fcm: Any, token: str) -> list[dict[str, Any]]:
    """One notification per tag, the newest of each (an untagged one stands alone)."""
    notes: dict[str, dict[str, Any]] = {}
    for index, message in enumerate(fcm.messages):
        if message.token != token:
            continue
        android = message.android or {}
        tag = (android.get("notification") or {}).get("tag") or f"#{index}"
        note = {**(message.notification or {}), **(android.get("notification") or {})}
        activity = _json((message.data or {}).get("activity"))
        state = activity.get("state") or {} if isinstance(activity, dict) else {}
        earlier = notes.pop(tag, None)
        notes[tag] = {
            "tag": tag,
            "title": note.get("title"),
            "body": note.get("body"),
            "progress": _progress(state),
            "ended": isinstance(activity, dict) and activity.get("event") == "end",
            "updates": (earlier["updates"] if earlier else 0) + 1,
            "at": message.received_at,
        }
    return sorted(notes.values(), key=lambda note: note["at"], reverse=True)


def _ios_alerts(apns: Any, token: str) -> list[dict[str, Any]]:
    """The device's alerts, one per ``apns-collapse-id`` (the newest of each)."""
    notes: dict[str, dict[str, Any]] = {}
    for index, pushed in enumerate(apns.notifications):
        if pushed.device_token != token or pushed.push_type == "liveactivity":
            continue
        alert = pushed.aps.get("alert")
        alert = alert if isinstance(alert, dict) else {"title": alert}
        key = pushed.headers.get("apns-collapse-id") or f"#{index}"
        earlier = notes.pop(key, None)
        notes[key] = {
            "tag": key,
            "title": alert.get("title"),
            "body": alert.get("body"),
            "progress": None,
            "ended": False,
            "updates": (earlier["updates"] if earlier else 0) + 1,
            "at": pushed.received_at,
        }
    return sorted(notes.values(), key=lambda note: note["at"], reverse=True)


def _live_activities(apns: Any, device: Any, own: dict[str, str]) -> list[dict[str, Any]]:
    """The iPhone's Live Activities: for each order started on it by its push-to-start
    token (or with a token of its own), the newest state APNs delivered."""
    starts: dict[str, Any] = {}
    counts: dict[str, int] = {}
    started_by = device.push_to_start_token
    mine = {token: activity for activity, token in own.items()}
    for pushed in apns.notifications:
        if pushed.push_type != "liveactivity":
            continue
        if started_by and pushed.device_token == started_by:
            attributes = pushed.aps.get("attributes") or {}
            if pushed.aps.get("attributes-type") != ATTRIBUTES_TYPE or "orderId" not in attributes:
                continue
            activity = f"order-{attributes['orderId']}"
            starts[activity] = pushed
        elif pushed.device_token in mine:
            activity = mine[pushed.device_token]
        else:
            continue
        counts[activity] = counts.get(activity, 0) + 1
    live = apns.live_activities
    cards = []
    now = time.time()
    for activity in {**starts, **dict.fromkeys(own)}:
        start = starts.get(activity)
        newest = live.get(own[activity]) if activity in own else None
        candidates = [
            (newest.timestamp, newest.event, newest.content_state, newest.aps, newest.attributes)
            if newest is not None
            else None,
            (
                start.aps["timestamp"],
                "start",
                start.aps["content-state"],
                start.aps,
                start.aps.get("attributes"),
            )
            if start is not None
            else None,
        ]
        present = [c for c in candidates if c is not None]
        if not present:
            continue  # a token registered, nothing received yet
        stamp, event, state, aps, attributes = max(present, key=lambda c: c[0])
        attributes = attributes or (start.aps.get("attributes") if start else None) or {}
        dismissal = aps.get("dismissal-date")
        if event == "end" and dismissal is not None and dismissal <= now:
            continue  # iOS took it off the lock screen
        status = str(state.get("status", ""))
        cards.append(
            {
                "id": activity,
                "order": attributes.get("orderId") or activity.removeprefix("order-"),
                "total": attributes.get("total"),
                "status": status,
                "label": STATUS_LABELS.get(status, status),
                "eta": state.get("eta"),
                "progress": _progress(state),
                "event": event,
                "ended": event == "end",
                "updates": counts.get(activity, 0),
                "ownToken": activity in own,
                "timestamp": stamp,
            }
        )
    return sorted(cards, key=lambda card: card["timestamp"], reverse=True)


def to_register(shown: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Of the ``screens``, the Live Activities a push-to-start started on an iPhone
    that has no token of its own for it yet: the simulated app registers one.

    An ended one too: a real app registers its token as the activity starts, but this
    one runs only while the Phones page is open. An order delivered meanwhile would
    show its start for ever; registered, flask-push sends the token its last state
    (the catch-up), which ends the Live Activity as it would have."""
    return [
        {"installation": screen["id"], "activityId": card["id"]}
        for screen in shown
        for card in screen["activities"]
        if not card["ownToken"]
    ]


def _json(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
