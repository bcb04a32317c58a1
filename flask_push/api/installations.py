"""``/installations``: mobile app installs that receive FCM or APNs pushes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import current_app
from flask.typing import ResponseReturnValue

from .. import validation
from ..activities import catch_up, forget_tokens
from ..database import commit_keeping
from ..models import hurry_waiting, utcnow
from ..schemas.installation import (
    ActivityTokenCreate,
    ActivityTokenShown,
    Installation,
    InstallationCreate,
    InstallationUpdate,
    live_token,
)
from .http import (
    caller_id,
    fail,
    not_found,
    owner_for,
    parse_body,
    push,
    second_to_insert,
    user_or_admin,
)
from .routes import OWNER, USER, Answer, Routes

ROUTES = Routes("installations", who=OWNER)
_LINKS = ("getInstallation", "updateInstallation", "deleteInstallation")
_ID = "The installation's id."


#: field of the body -> column
_COLUMNS = {
    "device_token": "device_token",
    "subscriptions": "subscriptions",
    "badge": "badge",
    "time_zone": "time_zone",
    "app_version": "app_version",
    "push_to_start_token": "push_to_start_token",
}


#: what an installation registered again by another user starts with, where the body
#: does not say (its appVersion stays: the app on the device is the same)
_STARTING_OVER: dict[str, Any] = {
    "subscriptions": [],
    "badge": None,
    "time_zone": None,
    "push_to_start_token": None,
}


#: the answer to a user who names another user
_NOT_YOURS = "Only administrators may register an installation for another user."


def _values(given: InstallationUpdate) -> dict[str, Any]:
    """The settable fields the body holds (null too), keyed by column."""
    given_names = given.model_fields_set
    values = {
        column: getattr(given, name) for name, column in _COLUMNS.items() if name in given_names
    }
    if "subscriptions" in values:
        values["subscriptions"] = values["subscriptions"] or []
    return values


@ROUTES(
    "POST",
    "/installations",
    "registerInstallation",
    "Register a mobile app install",
    who=USER,
    body=InstallationCreate,
    answers={
        201: Answer("Created.", Installation, _LINKS),
        200: Answer(
            "The (appId, deviceToken) was known: updated and re-bound.", Installation, _LINKS
        ),
    },
    errors=(401, 403, 409),
)
def register_installation() -> ResponseReturnValue:
    """Register a device; a known (appId, deviceToken) is updated and re-bound."""
    caller = user_or_admin()
    given = parse_body(InstallationCreate)
    # an app registers its device twice at once (a launch and a token refresh)
    installation, created = second_to_insert(lambda: _register(given, caller))
    return Installation.model_validate(installation).to_json(), 201 if created else 200


def _register(given: InstallationCreate, caller: str | None) -> tuple[Any, bool]:
    """Write the device's installation and commit: the row and whether it is new."""
    values = _values(given)
    values.update(
        device_token=given.device_token,
        user_id=owner_for(given.user_id, caller, _NOT_YOURS),
        device_type=given.device_type,
        modified_at=utcnow(),
    )

    ext = push()
    model = ext.models.Installation
    session = ext.db.session
    installation = session.scalar(
        sa.select(model).where(
            model.app_id == given.app_id, model.device_token == values["device_token"]
        )
    )
    created = installation is None
    if installation is None:
        installation = model(
            app_id=given.app_id, subscriptions=[], created_at=values["modified_at"]
        )
        session.add(installation)
    elif installation.user_id != values["user_id"]:
        # another user signed in on the device
        values = _start_over(installation, values)
    elif installation.device_type != values["device_type"]:
        values = _other_platform(installation, values)
    for name, value in values.items():
        setattr(installation, name, value)
    installation.revive()
    commit_keeping(session, installation)
    return installation, created


def _start_over(installation: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` for an installation that changes hands: the new owner starts over,
    as a browser does, without the last owner's topics, badge, time zone or Live
    Activities (nor a sight of them in the answer), where ``values`` does not say."""
    ext = push()
    forget_tokens(ext.db.session, ext.models, [installation.id])
    return {**_STARTING_OVER, **values}


def _other_platform(installation: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` for an installation registered again as the other platform's (the
    token was first said to be of the wrong one): its Live Activity tokens, which
    only iOS has, do not go with it, nor does the answer show them. (An iOS
    installation became an Android one that kept them, which the API refuses to
    make any other way.)"""
    ext = push()
    forget_tokens(ext.db.session, ext.models, [installation.id])
    return {"push_to_start_token": None, **values}


def _token_free(installation: Any, token: str) -> None:
    """Refuse a device token that another installation of the app holds: one device
    is one installation (POST /installations with the token updates that one)."""
    ext = push()
    model = ext.models.Installation
    holder = ext.db.session.scalar(
        sa.select(model.id).where(
            model.app_id == installation.app_id,
            model.device_token == token,
            model.id != installation.id,
        )
    )
    if holder is not None:
        fail(
            409,
            "conflict",
            f"Another installation of appId {installation.app_id!r} has this device "
            "token: register it with POST /installations, which updates that "
            "installation, and delete this one.",
        )


def _owned(id: str) -> Any:
    ext = push()
    caller = user_or_admin()
    installation = ext.db.session.get(ext.models.Installation, id)
    if installation is None or (installation.user_id != caller and not ext.current_user_is_admin()):
        not_found("installation")
    return installation


@ROUTES(
    "GET",
    "/installations/<id>",
    "getInstallation",
    "One installation",
    id_description=_ID,
    answers={200: Answer("The installation.", Installation)},
    errors=(401, 404),
)
def get_installation(id: str) -> ResponseReturnValue:
    return Installation.model_validate(_owned(id)).to_json()


@ROUTES(
    "PATCH",
    "/installations/<id>",
    "updateInstallation",
    "Change an installation",
    id_description=_ID,
    body=InstallationUpdate,
    answers={200: Answer("The changed installation.", Installation)},
    errors=(401, 403, 404, 409),
)
def update_installation(id: str) -> ResponseReturnValue:
    installation = _owned(id)
    given = parse_body(InstallationUpdate)
    values = _values(given)
    if values.get("device_token") is not None:
        # the shape of the tokens of the device type it was registered with
        values["device_token"] = validation.device_token(
            values["device_token"], installation.device_type
        )
        _token_free(installation, values["device_token"])
    if values.get("push_to_start_token") is not None:
        values["push_to_start_token"] = live_token(
            values["push_to_start_token"], installation.device_type, "pushToStartToken"
        )
    if "user_id" in given.model_fields_set:
        values["user_id"] = owner_for(given.user_id, caller_id(), _NOT_YOURS)
        if values["user_id"] != installation.user_id:
            values = _start_over(installation, values)
    # a new token for a dead installation (its push service said the old one was
    # unregistered): the app has a working one again, as a POST with it would say
    fresh = values.get("device_token") not in (None, installation.device_token)
    for name, value in values.items():
        setattr(installation, name, value)
    if fresh:
        installation.revive()
    installation.modified_at = utcnow()
    commit_keeping(push().db.session, installation)
    return Installation.model_validate(installation).to_json()


@ROUTES(
    "DELETE",
    "/installations/<id>",
    "deleteInstallation",
    "Remove an installation",
    id_description=_ID,
    answers={204: Answer("Deleted.")},
    errors=(401, 404),
)
def delete_installation(id: str) -> ResponseReturnValue:
    installation = _owned(id)
    session, models = push().db.session, push().models
    hurry_waiting(session, models, models.Delivery.installation_id, installation.id, utcnow())
    forget_tokens(session, models, [installation.id])
    session.delete(installation)
    session.commit()
    return "", 204


@ROUTES(
    "POST",
    "/installations/<id>/activities",
    "registerActivityToken",
    "Register an iOS Live Activity's push token",
    id_description=_ID,
    body=ActivityTokenCreate,
    answers={
        201: Answer(
            "Registered. The activity's latest state, if it was sent to the device before "
            "the token came, is queued to the token, without an alert.",
            ActivityTokenShown,
        ),
        200: Answer(
            "The activity had a token on this installation: replaced (a changed token gets "
            "the latest state as a new one does).",
            ActivityTokenShown,
        ),
    },
    errors=(401, 404),
)
def register_activity_token(id: str) -> ResponseReturnValue:
    """The installation's Live Activity for ``activityId`` gets ``push.activity``'s
    states as Live Activity pushes, to this token; a token APNs says is dead is dropped."""
    installation = _owned(id)
    given = parse_body(ActivityTokenCreate)
    token = live_token(given.push_token, installation.device_type, "pushToken")

    def write() -> tuple[Any, Any, bool, bool]:
        # Each try reads the installation (from the session, the first time): before
        # a retry, a third request may have deleted it or given the device away.
        mine = _owned(id)
        return (mine, *_register_token(mine, given.activity_id, token))

    # ActivityKit hands the app a token and, at once, a refreshed one: two requests
    installation, row, created, new = second_to_insert(write)
    shown = ActivityTokenShown.model_validate(row).to_json()
    if new:
        _catch_up(installation, given.activity_id, first=created)
    return shown, 201 if created else 200


def _register_token(installation: Any, activity_id: str, token: str) -> tuple[Any, bool, bool]:
    """Write the activity's token on the installation and commit: the row, whether
    it is new, and whether its token is (a Live Activity that has not had the
    activity's latest state)."""
    ext = push()
    session = ext.db.session
    model = ext.models.ActivityToken
    row = session.get(model, (installation.id, activity_id))
    created = row is None
    if row is None:
        row = model(installation_id=installation.id, activity_id=activity_id)
        session.add(row)
    new = created or row.push_token != token
    if new:
        # when this Live Activity registered: the same token again is the same one
        # (an app posting its tokens at each launch), and one a farewell ended stays
        # forgettable (activities.forget_ended)
        row.push_token, row.created_at = token, utcnow()
    commit_keeping(session, row, installation)
    return row, created, new


def _catch_up(installation: Any, activity_id: str, *, first: bool) -> None:
    """The activity's latest state, to the token just registered (see
    :func:`~flask_push.activities.catch_up`). The token is registered either way: a
    state that cannot be queued is logged, and the next call reaches the token."""
    installation_id = installation.id
    try:
        caught = catch_up(push().state, installation, activity_id, first=first)
    except Exception:
        push().db.session.rollback()
        current_app.logger.exception(
            "flask-push: installation %s registered its Live Activity token for %r, but "
            "the activity's latest state could not be queued to it; its next state will be",
            installation_id,
            activity_id,
        )
        return
    if caught is not None:
        current_app.logger.info(
            "flask-push: %s: the latest state of %r, to the Live Activity token installation "
            "%s has just registered",
            caught.id,
            activity_id,
            installation_id,
        )
