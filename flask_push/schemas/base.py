"""What every wire shape is made of: the base models, the validation context, and the
ways a rule refuses with the contract's codes and adds itself to the document.

Where the contract answers with a code of its own (``invalid_url``,
``invalid_key``...), a rule raises :func:`refuse` with that code; pydantic's own
error types become the contract's codes in :mod:`flask_push.schemas.errors`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainValidator,
    ValidationInfo,
    WrapValidator,
)
from pydantic import ValidationError as PydanticError
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from .. import validation
from ..categories import Category
from ..config import DEFAULT_ENDPOINT_HOSTS, PushSettings
from ..errors import ValidationError
from ..message import printable

# -- base models ---------------------------------------------------------------------


class WireModel(BaseModel):
    """A request body, or the arguments of a Python call that takes the same values.

    Strict: JSON ``"5"`` is not a number and ``1`` is not ``true``; unknown fields are
    refused. Fields are snake_case in Python and camelCase on the wire; a field's
    docstring is its description in the document.
    """

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        # never generated for requests; for a stored value shown again (a message's
        # notification), every field is in the answer
        json_schema_serialization_defaults_required=True,
    )


class NoFields(BaseModel):
    """An empty JSON object, or no body at all: the operation takes no fields, so a
    field sent is refused, not ignored (a filter such as `userId` would otherwise act
    on everything it was meant to narrow). A body needs `Content-Type:
    application/json`, and so does no body from a page of another site."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    """A response body. Every field is always in the JSON, null when it has no value."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        from_attributes=True,
        use_attribute_docstrings=True,
        json_schema_serialization_defaults_required=True,
    )

    def to_json(self) -> dict[str, Any]:
        """The body as the API answers it."""
        return self.model_dump(mode="json", by_alias=True)


# -- context: what checks need beyond the value -----------------------------------------


@dataclass(frozen=True)
class Context:
    """What pydantic passes to the checks as the validation context.

    The limits that come from configuration (``PUSH_MAX_TOPICS``,
    ``PUSH_ENDPOINT_HOSTS``, ``PUSH_ALLOW_HTTP_ENDPOINTS``, ``PUSH_CATEGORIES``), and
    whether the values come from a JSON body, where a time is an RFC 3339 string (the
    Python API takes a ``datetime``).
    """

    max_topics: int = validation.MAX_TOPICS
    endpoint_hosts: tuple[str, ...] = DEFAULT_ENDPOINT_HOSTS
    allow_http_endpoints: bool = False
    json: bool = False
    #: ``PUSH_CATEGORIES``, in their order
    categories: tuple[Category, ...] = ()

    @classmethod
    def of(cls, settings: PushSettings, *, json: bool = False) -> Context:
        return cls(
            max_topics=settings.max_topics,
            endpoint_hosts=settings.endpoint_hosts,
            allow_http_endpoints=settings.allow_http_endpoints,
            json=json,
            categories=tuple(settings.categories.values()),
        )


def context_of(info: ValidationInfo) -> Context:
    given = info.context
    return given if isinstance(given, Context) else Context()


#: the context the OpenAPI document is written for, so that its limits are the app's
document_context: ContextVar[Context | None] = ContextVar("document_context", default=None)


def document_limits() -> Context:
    """The limits of the app whose document is being written (the defaults outside)."""
    return document_context.get() or Context()


# -- refusing with the contract's codes -------------------------------------------------


def refuse(code: str, message: str, field: str | None = None) -> PydanticCustomError:
    """A refusal with one of the contract's codes and a sentence for a person.

    ``field`` names a field below the value checked, for a rule that spans fields
    (it is added to the error's path).
    """
    # printable: pydantic cannot even render an error that holds a lone surrogate
    # (JSON's "\\ud800", in a key that the message or field names)
    context: dict[str, Any] = {"message": printable(message)}
    if field is not None:
        context["field"] = printable(field)
    # the message goes through the context: a template would read its braces as fields
    return PydanticCustomError(code, "{message}", context)


def _adapted(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``check`` (one of :mod:`flask_push.validation`'s), refusing as pydantic wants:
    its code and message are kept, and the path is where the value is."""

    def validate(value: Any) -> Any:
        try:
            return check(value)
        except ValidationError as err:
            raise refuse(err.code, err.message) from None

    return validate


def checked(check: Callable[[Any], Any], shown_as: Any) -> PlainValidator:
    """Validate with ``check`` alone; the document shows ``shown_as``, the shape the
    check accepts."""
    return PlainValidator(_adapted(check), json_schema_input_type=shown_as)


def then(check: Callable[[Any], Any]) -> AfterValidator:
    """Run ``check`` after the type and the constraints before it."""
    return AfterValidator(_adapted(check))


def refuse_as(
    code: str, message: str, *, when: Callable[[Mapping[str, Any]], bool] | None = None
) -> WrapValidator:
    """Answer every failure of the inner checks (or those ``when`` picks) with one code
    and sentence, as the contract answered them before these models."""

    def wrap(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except PydanticError as err:
            if when is None or any(when(error) for error in err.errors()):
                raise refuse(code, message) from None
            raise

    return WrapValidator(wrap)


def _is_shape(error: Mapping[str, Any]) -> bool:
    """Is ``error`` about the value as a whole (not an object, too few items...)?"""
    return bool(error["loc"] == ())


def shape_as(code: str, message: str) -> WrapValidator:
    """Answer a value that is not the object or list it should be with ``code``; a
    wrong part of it still names that part."""
    return refuse_as(code, message, when=_is_shape)


def _refuse_null(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
    if value is None:
        raise refuse("required", "is required")
    return handler(value)


#: a required value sent as null is missing, not of the wrong type
NotNull = WrapValidator(_refuse_null)


# -- rules that check and document ------------------------------------------------


def ecma(pattern: re.Pattern[str] | str) -> str:
    """A regex in JSON Schema's (ECMA-262) spelling: ``\\Z`` is ``$`` there, and the
    checks match from the start (``re.match``)."""
    body = (pattern if isinstance(pattern, str) else pattern.pattern).replace(r"\Z", "$")
    return body if body.startswith("^") else "^" + body


class AfterCheck:
    """Metadata that checks a value after its type, and adds to its JSON schema."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(
            lambda value, info: self.check(value, context_of(info)), handler(source)
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return self.document(handler(schema), document_limits())

    def check(self, value: Any, context: Context) -> Any:
        raise NotImplementedError

    def document(self, json_schema: JsonSchemaValue, context: Context) -> JsonSchemaValue:
        """``json_schema`` with what the check adds to it, for the app ``context`` is of."""
        return json_schema


# -- answers ------------------------------------------------------------------------


class Documented:
    """What the document says of an answer's value, without checking it again: a row
    that is read is answered, never turned into an error.

    ``Annotated[str, Documented(pattern="^sub_")]``
    """

    def __init__(self, **json_schema: Any) -> None:
        self.json_schema = json_schema

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(schema), **self.json_schema}


#: what ``str.strip()`` takes off both ends of a setting
_SPACE = (
    "[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000]*"
)


def stripped(pattern: re.Pattern[str] | str) -> str:
    """A setting's pattern as the document shows it: white space around is stripped."""
    body = ecma(pattern).removeprefix("^").removesuffix("$")
    return f"^{_SPACE}{body}{_SPACE}$"


def starts_with(prefix: str) -> str:
    """A setting that starts with ``prefix`` once white space is stripped."""
    return f"^{_SPACE}{prefix}"
