"""``/users/<id>/...``: a user's browsers and devices, and their choices, for an
operator."""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from ..preferences import known
from ..schemas.delivery import UserTargets
from ..schemas.preferences import Preferences
from ..targets import DEFAULT_RECENT
from .http import fail, push, require_admin
from .routes import ADMIN, Answer, Routes

ROUTES = Routes("users", who=ADMIN)
_USER_ID = "The user's id, as the host's `identity_loader` gives it."


@ROUTES(
    "GET",
    "/users/<id>/targets",
    "listUserTargets",
    "A user's browsers and devices, with their recent deliveries",
    id_description=_USER_ID,
    answers={
        200: Answer(
            "Every subscription and installation of the user, oldest first, each with "
            f"its {DEFAULT_RECENT} latest deliveries.",
            UserTargets,
        )
    },
    errors=(400, 403, 404),
)
def list_targets(id: str) -> ResponseReturnValue:
    # an object, not a bare list: room for more about the user later
    require_admin()
    found = push().user_targets(id)
    if not found:
        # flask-push knows users only by their targets: a mistyped id is said so
        fail(404, "not_found", "No subscription or installation belongs to that user.")
    return UserTargets.model_validate({"items": found}).to_json()


@ROUTES(
    "GET",
    "/users/<id>/preferences",
    "getUserPreferences",
    "A user's channels per category, and quiet hours",
    id_description=_USER_ID,
    answers={
        200: Answer(
            "What `GET /preferences` answers that user: every category of PUSH_CATEGORIES "
            "with the channels the user chooses for it (the defaults where they never "
            "chose), and the quiet hours. 404 for a user flask-push does not know: no "
            "browser, device, inbox item or choice of theirs is stored.",
            Preferences,
        )
    },
    errors=(400, 403, 404),
)
def get_user_preferences(id: str) -> ResponseReturnValue:
    # what an operator asks when the timeline says opted_out or quiet_hours
    require_admin()
    ext = push()
    found = ext.get_preferences(id)
    if not known(ext.db.session, ext.models, id):
        # the defaults would answer a mistyped id as well as a real user
        fail(
            404,
            "not_found",
            "No subscription, installation, inbox item or choice belongs to that user.",
        )
    return found.to_json(ext.settings.categories)
