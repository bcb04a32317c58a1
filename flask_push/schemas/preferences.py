"""``/preferences``: what a user lets reach them, per category and channel, and when."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import model_validator
from pydantic.json_schema import JsonSchemaValue

from ..categories import Channel
from .base import AfterCheck, Context, NotNull, ResponseModel, WireModel, refuse, shape_as
from .fields import Boolean, Name, Pattern, TimeZone, unknown_category

#: a local time of day, 24-hour clock
LOCAL_TIME = re.compile(r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]\Z")
LocalTime = Annotated[
    str, Pattern(LOCAL_TIME, "invalid_value", "must be a time of day as HH:MM, such as 22:00")
]


class QuietHours(WireModel):
    """A daily window, in the user's time zone, when pushes of categories that are not
    required wait (the inbox still gets them). It may cross midnight: 22:00 to 07:00."""

    start: Annotated[LocalTime, NotNull]
    """When the quiet starts, local time (HH:MM)."""
    end: Annotated[LocalTime, NotNull]
    """When it ends, local time (HH:MM); the pushes that waited go then."""
    time_zone: Annotated[TimeZone, NotNull]
    """The user's IANA time zone, such as `Europe/Berlin`."""

    @model_validator(mode="after")
    def _a_window(self) -> QuietHours:
        if self.start == self.end:
            raise refuse("invalid_value", "must differ from the start", "end")
        return self


#: a channel's choices of one category: ``{"web": false}``
ChannelChoices = Annotated[
    dict[str, Boolean],
    shape_as("invalid_type", "must be an object of channel -> true or false"),
]


@dataclass(frozen=True)
class _Choices(AfterCheck):
    """Choices of this app's categories, of the channels each lets users choose, and
    never off for a required one; the document spells out exactly that."""

    def check(
        self, value: dict[str, dict[str, bool]], context: Context
    ) -> dict[str, dict[str, bool]]:
        categories = {c.id: c for c in context.categories}
        for id, choices in value.items():
            category = categories.get(id)
            if category is None:
                raise refuse("unknown_category", unknown_category(context), id)
            for channel, on in choices.items():
                if channel not in category.channels:
                    raise refuse(
                        "invalid_value",
                        f"is not a channel users choose for {category.label!r}; it has "
                        f"{', '.join(category.channels)}",
                        f"{id}.{channel}",
                    )
                if category.required and not on:
                    raise refuse(
                        "required_category",
                        f"cannot be turned off: {category.label!r} is required",
                        f"{id}.{channel}",
                    )
        return value

    def document(self, json_schema: JsonSchemaValue, context: Context) -> JsonSchemaValue:
        return {
            "type": "object",
            "properties": {
                c.id: {
                    "type": "object",
                    "properties": {
                        channel: {"const": True} if c.required else {"type": "boolean"}
                        for channel in c.channels
                    },
                    "additionalProperties": False,
                }
                for c in context.categories
            },
            "additionalProperties": False,
        }


class PreferencesUpdate(WireModel):
    """A partial update: the channels named change, the others keep their state."""

    categories: (
        Annotated[
            dict[Name, ChannelChoices],
            shape_as("invalid_type", "must be an object such as {'offers': {'web': false}}"),
            _Choices(),
        ]
        | None
    ) = None
    """Category id -> channel (`web`, `mobile`, `inbox`) -> on or off."""
    quiet_hours: QuietHours | None = None
    """All three of `start`, `end` and `timeZone`; `null` removes the quiet hours."""

    def removes_quiet_hours(self) -> bool:
        """``quietHours`` was given as null (absent keeps them)."""
        return "quiet_hours" in self.model_fields_set and self.quiet_hours is None

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise refuse("invalid_type", "must be an object with categories and/or quietHours")
        return value


class CategoryPreference(ResponseModel):
    """One category, and the user's channels for it."""

    id: str
    """The category's id, as `push.send(category=...)` names it."""
    label: str
    """What the user sees."""
    required: bool
    """It cannot be turned off: its channels are all on."""
    channels: dict[Channel, bool]
    """The channels the user chooses for it, on or off."""


class QuietHoursShown(ResponseModel):
    """The user's quiet hours."""

    start: str
    end: str
    time_zone: str


class Preferences(ResponseModel):
    """What reaches the user: each category's channels, and the quiet hours."""

    categories: list[CategoryPreference]
    """Every category of PUSH_CATEGORIES, in its order."""
    quiet_hours: QuietHoursShown | None
    """Null when the user has none."""
