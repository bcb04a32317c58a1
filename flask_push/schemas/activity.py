"""The arguments of ``push.activity()``: which activity, who follows it, and its state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from annotated_types import MaxLen, MinLen
from pydantic import model_validator

from ..message import Urgency
from .base import NotNull, WireModel, refuse
from .fields import CategoryId, JsonObject, Link, Name, ShortText, Title, UserId
from .inbox import Body
from .notification import MAX_USERS, SendAt


class ActivityCall(WireModel):
    """One state of an activity, for every screen of its users."""

    id: Annotated[Name, NotNull]
    users: Annotated[list[UserId], MinLen(1), MaxLen(MAX_USERS)]
    title: Annotated[Title, NotNull]
    body: Body | None = None
    url: Link | None = None
    event: Literal["start", "update", "end"] = "update"
    state: JsonObject | None = None
    category: CategoryId | None = None
    stale_at: SendAt | None = None
    dismiss_at: SendAt | None = None
    attributes_type: ShortText | None = None
    attributes: JsonObject | None = None
    #: as :meth:`~flask_push.Push.send`'s; ``high`` sends an update at APNs'
    #: priority 10 too (a start and an end always go at 10)
    urgency: Urgency | None = None

    @model_validator(mode="after")
    def _attributes_start_it(self) -> ActivityCall:
        # a push-to-start carries the Live Activity's type and static attributes
        if (self.attributes_type is None) != (self.attributes is None):
            raise refuse(
                "invalid_value",
                "attributes_type and attributes go together",
                "attributesType" if self.attributes_type is None else "attributes",
            )
        if self.attributes is not None and self.event != "start":
            raise refuse("invalid_value", "are only for event='start'", "attributes")
        if self.attributes is not None and self.state is None:
            # APNs takes a push-to-start without one, and the iPhone starts nothing:
            # ActivityKit cannot make the app's ContentState out of no content-state
            raise refuse(
                "required",
                "is required with attributes: a push-to-start's content-state "
                "(state={} for a ContentState without fields)",
                "state",
            )
        if self.dismiss_at is not None and self.event != "end":
            raise refuse("invalid_value", "is only for event='end'", "dismissAt")
        return self


def progress_of(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The inbox item's ``progress``: ``step`` of ``steps`` when ``state`` has both."""
    step, steps = state.get("step"), state.get("steps")
    numbers = all(
        isinstance(n, (int, float)) and not isinstance(n, bool) and n >= 0 for n in (step, steps)
    )
    return {"total": steps, "processed": step} if numbers else None
