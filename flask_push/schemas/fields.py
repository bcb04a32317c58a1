"""Each rule and limit of the wire shapes, once: a type that carries its check and its
part of the OpenAPI document (``UserId``, ``Link``, ``Topics``...), so that what the
server refuses and what the document promises come from one declaration."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, Union

from annotated_types import BaseMetadata, GroupedMetadata, Interval
from pydantic import (
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    ValidationInfo,
    WrapValidator,
)
from pydantic import ValidationError as PydanticError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema
from typing_extensions import TypeAliasType

from .. import validation
from ..errors import ValidationError
from .base import (
    AfterCheck,
    Context,
    Documented,
    NotNull,
    checked,
    context_of,
    document_limits,
    ecma,
    refuse,
    refuse_as,
    then,
)


@dataclass(frozen=True)
class Pattern(AfterCheck):
    """Text of one shape, refused with ``code`` otherwise; the document shows the regex."""

    regex: re.Pattern[str]
    code: str
    message: str

    def check(self, value: str, context: Context) -> str:
        if not self.regex.match(value):
            raise refuse(self.code, self.message)
        return value

    def document(self, json_schema: JsonSchemaValue, context: Context) -> JsonSchemaValue:
        return {**json_schema, "pattern": ecma(self.regex)}


#: what the document says of text: no NUL (surrogates cannot be written in a pattern)
NO_NUL = "^[^\\u0000]*$"


@dataclass(frozen=True)
class _Storable(AfterCheck):
    """Text that can be stored and sent: no NUL (PostgreSQL refuses it) and no
    unpaired surrogate (JSON's ``"\\ud800"`` parses to one; UTF-8 cannot encode it)."""

    def check(self, value: str, context: Context) -> str:
        if not validation.storable(value):
            raise refuse("invalid_value", validation.UNSTORABLE)
        return value

    def document(self, json_schema: JsonSchemaValue, context: Context) -> JsonSchemaValue:
        return {"pattern": NO_NUL, **json_schema}


@dataclass(frozen=True)
class Text(GroupedMetadata):
    """A string of at most ``max_length`` characters that can be stored and sent
    (``Annotated[str, Text(255)]``); empty only when ``allow_empty``."""

    max_length: int
    allow_empty: bool = False

    def __iter__(self) -> Iterator[BaseMetadata | Any]:
        yield StringConstraints(min_length=0 if self.allow_empty else 1, max_length=self.max_length)
        yield _Storable()


#: the length of ids, names and short texts: what a ``String(255)`` column holds
MAX_TEXT = 255
ShortText = Annotated[str, Text(MAX_TEXT)]
#: white space, spelled out: Python's ``\s`` and JSON Schema's (ECMA-262) differ at
#: the edges, and the server and its document must refuse the same titles
_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
#: what a person reads first (a notification's or an inbox item's title): short text
#: with something to read, not only spaces or line breaks
Title = Annotated[
    str,
    Text(MAX_TEXT),
    # (no NUL either, as the document of any text says: this pattern replaces that one)
    Pattern(
        re.compile(rf"[^\x00]*[^{_SPACE}\x00][^\x00]*\Z"),
        "invalid_value",
        "must not be blank (only spaces)",
    ),
]
#: a user's id, as the host's ``identity_loader`` gives it and the owner columns hold it
UserId = Annotated[str, Text(MAX_TEXT), NotNull]
#: what a target's or a delivery's ``kind`` says
KIND = "The provider kind: `webpush`, `fcm` or `apns`."

#: a link shown to a user: a same-site path (``/orders/42``; never ``//host``, no
#: backslash) or an http(s) URL with a host, never ``javascript:`` and the like, and
#: no control character (browsers drop tabs and line breaks: "/<tab>/host" is //host).
#: :func:`flask_push.validation.link` still has the last word.
LINK = re.compile(
    r"(?:/(?:[^/\\\x00-\x1f\x7f][^\\\x00-\x1f\x7f]*)?"
    r"|[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9\-._~!$&'()*+,;=%:]*@)?[A-Za-z0-9\-._~!$&'()*+,;=%]+"
    r"(?::[0-9]*)?(?:[/?#][^\x00-\x1f\x7f]*)?)\Z"
)
#: the longest link (``url``, ``icon``, ``image``) a notification may carry
MAX_LINK = 2048
Link = Annotated[
    str,
    Text(MAX_LINK),
    Pattern(LINK, "invalid_url", "must be a path such as '/orders/42' or an http(s) URL"),
    then(validation.link),
]

_NAME = "must be 1-64 letters, digits, '_', '.', ':' or '-'"
#: 1-64 letters, digits and ``_ . : -``: a topic, an inbox item's id or type
Name = Annotated[
    str,
    Pattern(validation.NAME, "invalid_value", _NAME),
    # a number or a list is of the wrong type, said as of any other string field
    refuse_as("invalid_value", _NAME, when=lambda error: error["type"] != "string_type"),
]
TopicName = Name
#: the kind of an inbox item (a message's ``notifyType``)
NotifyType = Name


def unknown_category(context: Context) -> str:
    """Why an id is not a category, naming those there are."""
    known = ", ".join(c.id for c in context.categories) or "PUSH_CATEGORIES declares none"
    return f"is not a category of this app ({known})"


@dataclass(frozen=True)
class _CategoryId(AfterCheck):
    """One of this app's ``PUSH_CATEGORIES``; the document lists them."""

    def check(self, value: str, context: Context) -> str:
        if value not in {c.id for c in context.categories}:
            raise refuse("unknown_category", unknown_category(context))
        return value

    def document(self, json_schema: JsonSchemaValue, context: Context) -> JsonSchemaValue:
        return {**json_schema, "enum": [c.id for c in context.categories]}


#: the id of a category of ``PUSH_CATEGORIES`` (``push.send(category=...)``)
CategoryId = Annotated[Name, _CategoryId()]


@dataclass(frozen=True)
class _Topics:
    """The topics of a subscription or installation: :func:`flask_push.validation.topics`
    with the app's ``PUSH_MAX_TOPICS``, which the document shows as ``maxItems``."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(self.check)

    @staticmethod
    def check(value: Any, info: ValidationInfo) -> list[str]:
        try:
            return validation.topics(value, max_count=context_of(info).max_topics)
        except ValidationError as err:
            raise refuse(err.code, err.message) from None

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "array",
            "items": {"type": "string", "pattern": ecma(validation.NAME)},
            "maxItems": document_limits().max_topics,
            "description": "Topic names (1-64 letters, digits, '_', '.', ':' or '-'); null "
            "means none. Stored sorted, without duplicates; at most PUSH_MAX_TOPICS.",
        }


Topics = Annotated[list[str], _Topics()]


@cache
def time_zones() -> list[str]:
    """The IANA time zones this server knows (its tz database), in order."""
    return sorted(validation.time_zones())


@dataclass(frozen=True)
class _TimeZone(AfterCheck):
    """An IANA time zone such as ``Europe/Paris``; the document lists the server's."""

    def check(self, value: str, context: Context) -> str:
        try:
            return validation.time_zone(value) or value
        except ValidationError as err:
            raise refuse(err.code, err.message) from None

    def document(self, json_schema: JsonSchemaValue, context: Context) -> JsonSchemaValue:
        return {**json_schema, "enum": time_zones()}


#: one component of the document, not its ~600 names at every use
TimeZone = TypeAliasType("TimeZone", Annotated[str, Text(64), _TimeZone()])


def _whole_in_json(value: Any, info: ValidationInfo) -> Any:
    # JSON has one kind of number: 60.0 is the whole number 60 there, as JSON Schema's
    # "integer" says. From Python, a float stays a float, and is refused.
    if context_of(info).json and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class Whole(GroupedMetadata):
    """A whole number from ``low`` to ``high`` (``Annotated[int, Whole(0, 10)]``):
    not a bool or a string, nor a float unless it is whole and comes from JSON."""

    low: int
    high: int

    def __iter__(self) -> Iterator[BaseMetadata | Any]:
        yield Interval(ge=self.low, le=self.high)
        yield refuse_as("invalid_value", f"must be a whole number from {self.low} to {self.high}")
        yield BeforeValidator(_whole_in_json)


def _true_or_false(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except PydanticError:
        raise refuse("invalid_type", "must be true or false") from None


Boolean = Annotated[bool, WrapValidator(_true_or_false)]


# -- JSON values ------------------------------------------------------------------------

NoNul = Annotated[str, StringConstraints(pattern=NO_NUL)]
#: a JSON value whose strings (object keys too) hold no NUL: what the document shows
#: of ``data``; :func:`flask_push.validation.json_value` checks it
JsonValue: Any = TypeAliasType(
    "JsonValue",
    # a recursive alias that only pydantic reads; mypy cannot follow it
    Union[None, bool, int, float, NoNul, list["JsonValue"], dict[NoNul, "JsonValue"]],  # type: ignore[misc]  # noqa: UP007
)


def _json_object(value: Any) -> dict[str, Any] | None:
    return validation.json_object(value, "data")


#: a JSON object (``data``): finite numbers, no NUL or unpaired surrogate in a string
#: or key, at most 64 levels deep
JsonObject = Annotated[dict[str, Any], checked(_json_object, dict[NoNul, JsonValue])]


# -- pages -------------------------------------------------------------------------

#: the most items (or messages) one page may hold, and how many without ``take``
MAX_TAKE = 100
DEFAULT_TAKE = 20
#: the most rows a listing may skip
MOST_SKIPPED = 10**9
#: how many to skip: a page's start
Skip = Annotated[int, Whole(0, MOST_SKIPPED)]
#: how many a page holds
Take = Annotated[int, Whole(1, MAX_TAKE)]


# -- answers ------------------------------------------------------------------------


def RowId(prefix: str) -> Documented:  # noqa: N802 - reads as a type
    """The id of a row: its prefix and a ULID (``Annotated[str, RowId("sub")]``)."""
    return Documented(
        pattern=f"^{prefix}_[0-9A-HJKMNP-TV-Z]{{26}}$", description=f"`{prefix}_` and a ULID."
    )


#: a subscription's or installation's status: ``dead`` once its push service said it is gone
TargetStatus = Literal["active", "dead"]


# -- query strings -----------------------------------------------------------------------


def _whole_from_text(value: Any) -> Any:
    """A query parameter of ASCII digits as a number; else left as it is (and refused
    as not a number). ``int()`` alone would also read "１" (a fullwidth digit), " 5",
    "+5" and "1_000"."""
    if isinstance(value, str) and validation.digits(value):
        try:
            return int(value)
        except ValueError:  # more digits than int() reads from text
            return value
    return value


#: a whole number in a query string: ``Annotated[Take, FromQuery]``
FromQuery = BeforeValidator(_whole_from_text)


def _bool_from_text(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    return value


#: true or false in a query string: ``true``, ``false``, ``1`` or ``0``
QueryBool = Annotated[
    bool,
    refuse_as("invalid_value", "must be true or false"),
    BeforeValidator(_bool_from_text),
]
