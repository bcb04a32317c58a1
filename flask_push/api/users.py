"""``/users/<id>/targets``: a user's browsers and devices, for an operator."""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from ..schemas.delivery import UserTargets
from .http import fail, push, require_admin
from .routes import ADMIN, Answer, Routes

ROUTES = Routes("users", who=ADMIN)


@ROUTES(
    "GET",
    "/users/<id>/targets",
    "listUserTargets",
    "A user's browsers and devices, with their recent deliveries",
    id_description="The user's id, as the host's `identity_loader` gives it.",
    answers={
        200: Answer(
            "Every subscription and installation of the user, oldest first, each with "
            "its 5 latest deliveries.",
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
