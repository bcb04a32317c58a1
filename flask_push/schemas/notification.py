"""What a notification shows, when it goes, and who it goes to: the arguments of
``push.send()`` and ``push.notify_by_id()``, and the parts of ``POST /messages``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from annotated_types import MaxLen, MinLen
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic import ValidationError as PydanticError

from ..config import MAX_TTL
from ..message import Urgency
from .base import NotNull, WireModel, context_of, ecma, refuse, refuse_as, shape_as
from .errors import validation_error
from .fields import (
    Boolean,
    CategoryId,
    JsonObject,
    Link,
    NotifyType,
    ShortText,
    Text,
    Title,
    TopicName,
    UserId,
    Whole,
)
from .inbox import Body

#: the furthest ahead a message may be scheduled: a later ``sendAt`` is most likely a
#: mistake (a year mistyped), and this keeps ``sendAt`` plus the TTL far inside what
#: ``datetime`` and the databases hold
MAX_SCHEDULE_DAYS = 365
#: the most users one audience names
MAX_USERS = 10_000
#: RFC 3339 date-time (what OpenAPI's ``date-time`` format means), with its offset:
#: a fraction of any length (.NET writes 7 digits, Go 9), ``T`` and ``Z`` in either case
RFC_3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})\Z"
)

# -- what it shows ------------------------------------------------------------------------

Count = Annotated[int, Whole(0, 2**31 - 1)]
_counts: TypeAdapter[int] = TypeAdapter(Count, config=ConfigDict(strict=True))
_links: TypeAdapter[str] = TypeAdapter(Link, config=ConfigDict(strict=True))


def _badge(value: Any, info: ValidationInfo) -> int | str:
    try:
        if isinstance(value, str):
            return _links.validate_python(value, context=info.context)
        return _counts.validate_python(value, context=info.context)
    except PydanticError as err:
        found = validation_error(err)
        raise refuse(found.code, found.message) from None


#: a count (iOS, Android, the Badging API in browsers) or a Web Push badge image (a link)
Badge = Annotated[
    int | str,
    PlainValidator(_badge, json_schema_input_type=Count | Link),
]


class ShownNotification(WireModel):
    """What the notification shows, on every platform; a message keeps it as sent."""

    title: Annotated[Title, NotNull]
    body: Body | None = None
    url: Link | None = None
    icon: Link | None = None
    image: Link | None = None
    badge: Badge | None = None
    """A count (iOS, Android) or an image link (browsers)."""
    sound: ShortText | None = None
    tag: ShortText | None = None
    data: JsonObject | None = None
    ttl: Annotated[int, Whole(0, MAX_TTL)] | None = None
    """Seconds the push services keep it; PUSH_DEFAULT_TTL when absent."""
    urgency: Urgency | None = "normal"
    collapse_key: ShortText | None = None


# -- when and how it goes -----------------------------------------------------------------


def _send_at(value: Any, info: ValidationInfo) -> datetime:
    """A timezone-aware time at most :data:`MAX_SCHEDULE_DAYS` ahead, in UTC; in JSON an
    RFC 3339 date-time with its offset."""
    if isinstance(value, str) and context_of(info).json:
        shape = RFC_3339.match(value)
        if shape is None:
            raise refuse(
                "invalid_value",
                "must be an ISO-8601 date-time with an offset, such as 2030-01-31T09:00:00Z",
            )
        day, clock, fraction, offset = shape.groups()
        # in the one form fromisoformat reads on every Python (3.10 reads no "Z" and
        # fractions of 3 or 6 digits only): microseconds, and the offset in digits
        micros = (fraction or "")[:6].ljust(6, "0")
        offset = "+00:00" if offset in ("Z", "z") else offset
        try:
            value = datetime.fromisoformat(f"{day}T{clock}.{micros}{offset}")
        except ValueError:
            raise refuse("invalid_value", "is not a real date-time") from None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise refuse("invalid_value", "must be a timezone-aware datetime")
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:00-05:00 is past the year 9999 in UTC
        raise refuse("invalid_value", "is not a time datetime can hold") from None
    if utc > datetime.now(timezone.utc) + timedelta(days=MAX_SCHEDULE_DAYS):
        raise refuse("invalid_value", f"must be at most {MAX_SCHEDULE_DAYS} days ahead")
    return utc


SendAt = Annotated[
    datetime,
    PlainValidator(_send_at),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": ecma(RFC_3339),
            "description": "When to send (with an offset, such as `Z`); now when absent or "
            f"past. At most {MAX_SCHEDULE_DAYS} days ahead.",
        }
    ),
]


class MessageNotification(ShownNotification):
    """What the notification shows, and when it goes. A notification a push service
    would refuse as too large answers 400 `payload_too_large`."""

    send_at: SendAt | None = None
    idempotency_key: ShortText | None = None
    """A repeat with the same key answers the first message and queues nothing."""
    inbox: Boolean = False
    """Also add an inbox item per user."""
    notify_type: NotifyType | None = None
    """The inbox item's type."""
    category: CategoryId | None = None
    """A category of PUSH_CATEGORIES: each user's choices for it, their quiet hours and
    its daily cap apply (400 `unknown_category` for another). Absent: none of them."""

    def shown(self, default_ttl: int) -> dict[str, Any]:
        """What the message keeps: the shown fields, camelCase, with the defaults."""
        shown = self.model_dump(mode="json", by_alias=True, include=_SHOWN)
        shown["data"] = shown["data"] or {}
        shown["ttl"] = default_ttl if self.ttl is None else self.ttl
        shown["urgency"] = self.urgency or "normal"
        return shown


_SHOWN = set(ShownNotification.model_fields)


# -- who it goes to -----------------------------------------------------------------------

AUDIENCES = ("users", "topic", "query", "everyone")
#: the id of one subscription or installation (``push.notify_by_id``)
TargetId = Annotated[str, Text(40), NotNull]
_ONE_AUDIENCE = "must be one of {users: [..]}, {topic: ..}, {query: {..}} or {everyone: true}"

#: a value an installation's field is compared with
QueryValue = Annotated[ShortText, NotNull]
#: the fields a query may filter on (LoopBack's Installation names)
QueryField = Literal["userId", "deviceType", "appId", "appVersion"]


class QueryEq(WireModel):
    eq: QueryValue


class QueryNeq(WireModel):
    """Not equal, or not set."""

    neq: QueryValue


class QueryInq(WireModel):
    """One of."""

    inq: Annotated[list[QueryValue], MaxLen(MAX_USERS)]


class QueryNin(WireModel):
    """None of, or not set."""

    nin: Annotated[list[QueryValue], MaxLen(MAX_USERS)]


def _as_operator(condition: str | QueryEq | QueryNeq | QueryInq | QueryNin) -> dict[str, Any]:
    """A condition as ``{operator: value}``; a bare value means ``eq``."""
    if isinstance(condition, str):
        return {"eq": condition}
    return condition.model_dump()


Condition = Annotated[
    QueryValue | QueryEq | QueryNeq | QueryInq | QueryNin,
    refuse_as("invalid_value", "must be a value or one of {eq, neq, inq, nin: ...}"),
    AfterValidator(_as_operator),
]


def _a_bool(value: Any) -> Any:
    # Literal[True] takes 1 and 1.0 too (they equal True in Python); JSON's true only
    if not isinstance(value, bool):
        raise ValueError("not a boolean")
    return value


class MessageAudience(WireModel):
    """Exactly one audience: user ids, a topic, a query, or everyone."""

    users: Annotated[list[UserId], MinLen(1), MaxLen(MAX_USERS)] | None = None
    """User ids: their subscriptions and installations (and inbox items)."""
    topic: TopicName | None = None
    """Subscriptions and installations subscribed to this topic."""
    query: (
        Annotated[
            dict[QueryField, Condition],
            MinLen(1),
            shape_as(
                "invalid_type", "must be an object of conditions such as {'deviceType': 'ios'}"
            ),
        ]
        | None
    ) = None
    """LoopBack's notifyByQuery: `eq`, `neq`, `inq` and `nin` over `userId`,
    `deviceType`, `appId` and `appVersion`. Browsers match only a query on `userId` alone."""
    everyone: (
        Annotated[
            Literal[True], BeforeValidator(_a_bool), refuse_as("invalid_value", "must be true")
        ]
        | None
    ) = None
    """Every active subscription and installation."""

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise refuse("invalid_audience", _ONE_AUDIENCE)
        if set(value) - set(AUDIENCES):
            return value  # refused as an unknown field, which explains it best
        given = [name for name in AUDIENCES if value.get(name) is not None]
        if len(value) != 1 or len(given) != 1:
            raise refuse(
                "invalid_audience",
                "give exactly one audience: users, topic, query or everyone"
                + (f" (got {', '.join(given)})" if given else ""),
            )
        return value

    def keywords(self) -> dict[str, Any]:
        """The audience as ``push.send()``'s keywords (users without duplicates)."""
        if self.users is not None:
            return {"users": list(dict.fromkeys(self.users))}
        if self.topic is not None:
            return {"topic": self.topic}
        if self.query is not None:
            return {"query": self.query}
        return {"everyone": True}

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> Any:
        # one closed object per audience, so that the document says "exactly one"
        json_schema = handler.resolve_ref_schema(handler(schema))
        properties = json_schema.pop("properties")
        json_schema.pop("additionalProperties", None)
        json_schema.pop("type", None)
        json_schema["oneOf"] = [
            {
                "type": "object",
                "properties": {name: _not_null(properties[name])},
                "required": [name],
                "additionalProperties": False,
            }
            for name in AUDIENCES
        ]
        return json_schema


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A field's schema without null and its default: a field that is given is not null."""
    kept = {key: value for key, value in schema.items() if key != "default"}
    options = [option for option in kept.pop("anyOf", []) if option != {"type": "null"}]
    if len(options) == 1:
        kept.update(options[0])
    elif options:
        kept["anyOf"] = options
    kinds = kept.get("type")
    if isinstance(kinds, list):
        kinds = [kind for kind in kinds if kind != "null"]
        kept["type"] = kinds[0] if len(kinds) == 1 else kinds
    if "enum" in kept:
        values = [value for value in kept.pop("enum") if value is not None]
        kept.update({"const": values[0]} if len(values) == 1 else {"enum": values})
    return kept
