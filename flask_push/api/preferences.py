"""``/preferences``: the signed-in user's choices of what reaches them, and when."""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from .. import preferences
from ..schemas.preferences import Preferences, PreferencesUpdate
from .http import parse_body, push, user_id
from .routes import USER, Answer, Routes

ROUTES = Routes("preferences", who=USER)


def _answer(found: preferences.Preferences) -> ResponseReturnValue:
    return found.to_json(push().settings.categories)


@ROUTES(
    "GET",
    "/preferences",
    "getPreferences",
    "The signed-in user's channels per category, and quiet hours",
    answers={
        200: Answer(
            "Every category of PUSH_CATEGORIES with the channels the user chooses for it "
            "(a user who never chose sees the defaults), and the quiet hours.",
            Preferences,
        )
    },
    errors=(401,),
)
def get_preferences() -> ResponseReturnValue:
    return _answer(push().get_preferences(user_id()))


@ROUTES(
    "PATCH",
    "/preferences",
    "updatePreferences",
    "Change some of the signed-in user's channels, or their quiet hours",
    body=PreferencesUpdate,
    answers={200: Answer("The preferences as they are now.", Preferences)},
    errors=(401,),
)
def update_preferences() -> ResponseReturnValue:
    owner = user_id()
    change = parse_body(PreferencesUpdate)
    ext = push()
    return _answer(
        preferences.update(
            ext.db.session, ext.models, ext.settings.categories, owner, change, ext.state.metrics
        )
    )
