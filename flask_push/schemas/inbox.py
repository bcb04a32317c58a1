"""The notification inbox: ``push.upsert()`` and ``/notifications``."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any

from annotated_types import MaxLen
from pydantic import ConfigDict, Field, PlainValidator, WithJsonSchema

from .. import validation
from .base import Documented, ResponseModel, WireModel, ecma, refuse
from .fields import (
    DEFAULT_TAKE,
    Boolean,
    FromQuery,
    JsonObject,
    Link,
    Name,
    NotifyType,
    Pattern,
    QueryBool,
    Skip,
    Take,
    Text,
    Title,
    UserId,
)

#: an item id a client may choose (``export-7``), to update the item in place
ItemId = Name
#: an inbox item's or notification's text
#: the longest body a notification or an inbox item may have
MAX_BODY = 4000
Body = Annotated[str, Text(MAX_BODY, allow_empty=True)]


#: a count or amount of at least 0; an int stays an int
Amount = Annotated[int | float, WithJsonSchema({"type": "number", "minimum": 0})]


class Progress(ResponseModel):
    """How far a long task is, for a progress item."""

    model_config = ConfigDict(extra="forbid")

    total: Amount
    processed: Amount


def _progress(value: Any) -> dict[str, Any]:
    """``{"total", "processed"}``: finite numbers of at least 0, kept as given."""
    if not isinstance(value, dict) or set(value) - {"total", "processed"}:
        raise refuse("invalid_value", "must be an object {total, processed}")
    for key in ("total", "processed"):
        number = value.get(key)
        if (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or (isinstance(number, float) and not math.isfinite(number))  # NaN is no JSON
            or number < 0
        ):
            raise refuse("invalid_value", f"{key} must be a finite number of at least 0", key)
    return dict(value)


class InboxItemUpsert(WireModel):
    """Creates an item, or with the `id` of an existing item updates it; fields absent
    or null are left as they are. Also the arguments of `push.upsert()`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "export-7",
                    "type": "export",
                    "title": "Export",
                    "body": "40% done",
                    "progress": {"total": 100, "processed": 40},
                }
            ]
        }
    )

    id: ItemId | None = None
    """An item id of your choosing, to update the item in place; a new item gets a
    generated id."""
    user_id: UserId | None = None
    """Whose inbox: the caller when absent or null; only an admin may name another user."""
    notify_type: NotifyType | None = Field(default=None, alias="type")
    """Default `info`."""
    title: Title | None = None
    """Required for a new item."""
    body: Body | None = None
    url: Link | None = None
    data: JsonObject | None = None
    is_new: Boolean | None = None
    progress: (
        Annotated[dict[str, Any], PlainValidator(_progress, json_schema_input_type=Progress)] | None
    ) = None

    def columns(self) -> dict[str, Any]:
        """The fields given (not null), keyed by the item's columns."""
        values = {
            "type": self.notify_type,
            "title": self.title,
            "body": self.body,
            "url": self.url,
            "data": self.data,
            "is_new": self.is_new,
            "progress": self.progress,
        }
        return {name: value for name, value in values.items() if value is not None}


class InboxItem(ResponseModel):
    """An entry of a user's notification inbox."""

    id: str
    user_id: str
    type: Annotated[str, Documented(pattern=ecma(validation.NAME))]
    title: str
    body: str | None
    url: str | None
    data: dict[str, Any] | None
    is_new: bool
    progress: Progress | None
    created_at: datetime
    updated_at: datetime


class InboxPage(ResponseModel):
    """One page of the inbox, newest first."""

    total_count: Annotated[int, Documented(minimum=0)]
    """Items matching the filters, on all pages."""
    new_count: Annotated[int, Documented(minimum=0)]
    """The user's unread items, whatever the filters."""
    items: list[InboxItem]


class UpdatedCount(ResponseModel):
    """How many items changed."""

    updated: Annotated[int, Documented(minimum=0)]
    """How many items were unread."""


#: the most types one ``type`` parameter names, and the most ``type`` parameters
MAX_TYPES = 20
#: ``?type=a,b``: types separated by commas (empty parts are ignored)
_PART = rf"{validation.NAME_CHARACTERS}{{0,64}}"
TYPE_LIST = re.compile(rf"^{_PART}(?:,{_PART}){{0,{MAX_TYPES - 1}}}\Z")
TypeList = Annotated[
    str,
    Pattern(
        TYPE_LIST,
        "invalid_value",
        f"must be at most {MAX_TYPES} types of 1-64 letters, digits, '_', '.', ':' or '-', "
        "separated by commas",
    ),
]


class InboxQuery(WireModel):
    """The query string of ``GET /notifications``."""

    only_new: QueryBool = False
    """Only unread items (`1` and `0` are accepted too)."""
    types: Annotated[list[TypeList], MaxLen(MAX_TYPES)] = Field(default=[], alias="type")
    """Only items of these types; repeat the parameter or separate with commas."""
    skip: Annotated[Skip, FromQuery] = 0
    """Items to skip."""
    take: Annotated[Take, FromQuery] = DEFAULT_TAKE
    """Page size."""

    def type_names(self) -> list[str]:
        return [name for given in self.types for name in given.split(",") if name]
