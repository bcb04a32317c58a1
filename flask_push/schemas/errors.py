"""The contract's error, and the one place where a pydantic refusal becomes it.

Both APIs check with the same models: the Python API raises
:class:`flask_push.ValidationError`, and the HTTP API answers it as
``{"error": {"code", "message", "field"}}`` with status 400. pydantic's errors
never leave flask-push, and the host's own error handlers are left alone.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema
from pydantic import ValidationError as PydanticError

from ..errors import ValidationError
from ..validation import UNSTORABLE, clipped
from .base import Context, ResponseModel

M = TypeVar("M", bound=BaseModel)

#: pydantic's error type -> (the contract's code, a sentence; ``{}`` takes the error's context)
_CODES: dict[str, tuple[str, str]] = {
    "missing": ("required", "is required"),
    "extra_forbidden": ("unknown_field", "is not a field here"),
    "string_type": ("invalid_type", "must be a string"),
    # a lone surrogate ("\\ud800" in JSON) where pydantic reads a string itself
    "string_unicode": ("invalid_value", UNSTORABLE),
    "string_too_short": ("invalid_value", "must not be empty"),
    "string_too_long": ("too_long", "must be at most {max_length} characters"),
    "bool_type": ("invalid_type", "must be true or false"),
    "dict_type": ("invalid_type", "must be an object"),
    "model_type": ("invalid_type", "must be an object"),
    "model_attributes_type": ("invalid_type", "must be an object"),
    "list_type": ("invalid_type", "must be a list"),
    "too_short": ("invalid_value", "must hold at least {min_length}"),
    "too_long": ("invalid_value", "must hold at most {max_length}"),
    "literal_error": ("invalid_value", "must be {expected}"),
    "int_type": ("invalid_value", "must be a whole number"),
    "float_type": ("invalid_value", "must be a number"),
    "finite_number": ("invalid_value", "must be a finite number"),
    "greater_than_equal": ("invalid_value", "must be at least {ge}"),
    "less_than_equal": ("invalid_value", "must be at most {le}"),
}
#: the path element pydantic adds for a dict's key
_KEY = "[key]"


def validation_error(err: PydanticError, model: Any = None) -> ValidationError:
    """The contract's error for the first thing ``err`` refused.

    An unknown field is named first, as it always was: a typo explains the rest.
    ``field`` is the dotted camelCase path (``notification.data``, ``keys.p256dh``);
    list positions are left out (``topics``, not ``topics.3``).
    """
    errors = sorted(err.errors(), key=lambda error: error["type"] != "extra_forbidden")
    error = errors[0]
    loc = list(error["loc"])
    context = error.get("ctx") or {}
    path = [clipped(part) for part in loc if isinstance(part, str) and part != _KEY]
    if "field" in context:
        path.extend(clipped(part) for part in str(context["field"]).split("."))
    kind = error["type"]
    if "message" in context:  # raised by refuse(): the contract's own code and sentence
        code, message = kind, str(context["message"])
    elif kind in _CODES:
        code, template = _CODES[kind]
        try:
            message = template.format(**context)
        except (KeyError, IndexError):
            message = str(error["msg"])
    else:
        code, message = "invalid_value", str(error["msg"])
    if kind == "extra_forbidden":
        message = _unknown_field(model, loc)
    return ValidationError(message, field=".".join(path) or None, code=code)


def _unknown_field(model: Any, loc: list[Any]) -> str:
    name = clipped(str(loc[-1]))
    owner = _model_at(model, loc[:-1])
    if owner is None:
        return f"Unknown field {name!r}."
    expected = sorted(field.alias or key for key, field in owner.model_fields.items())
    if not expected:
        return f"Unknown field {name!r}; this operation takes none."
    return f"Unknown field {name!r}; expected one of {expected}."


def _model_at(model: Any, loc: list[Any]) -> type[BaseModel] | None:
    """The model whose object is at ``loc`` below ``model``, if one is."""
    current = _model_in(model)
    for part in loc:
        if current is None:
            return None
        if not isinstance(part, str) or part == _KEY:
            continue
        fields = {field.alias or key: field for key, field in current.model_fields.items()}
        if part in fields:
            current = _model_in(fields[part].annotation)
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: itself, or inside Optional, list, dict, Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is None:
        return None
    args = typing.get_args(annotation)
    if origin is Annotated:
        args = args[:1]
    elif origin in (typing.Union, types.UnionType, dict):
        args = args[1:] if origin is dict else args
    for arg in args:
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def parse(model: type[M], data: Any, context: Context, *, name: str | None = None) -> M:
    """``data`` checked as ``model``; raises :class:`flask_push.ValidationError`.

    ``name`` is the field named by an error about the object as a whole.
    """
    try:
        return model.model_validate(data, context=context)
    except PydanticError as err:
        found = validation_error(err, model)
        if found.field is None and name is not None:
            found.field = name
        raise found from None


def by_alias(model: type[BaseModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """Python keyword arguments keyed as the wire names them, so that an error names
    the field as the HTTP API does (``collapseKey``, not ``collapse_key``)."""
    fields = model.model_fields
    return {
        (fields[name].alias or name) if name in fields else name: v for name, v in values.items()
    }


@cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind, config=ConfigDict(strict=True))


def check(kind: Any, value: Any, field: str, context: Context | None = None) -> Any:
    """One value checked as the type ``kind`` (such as ``UserId``), named ``field``."""
    try:
        return _adapter(kind).validate_python(value, context=context or Context())
    except PydanticError as err:
        found = validation_error(err)
        raise ValidationError(
            found.message,
            field=".".join(part for part in (field, found.field) if part),
            code=found.code,
        ) from None


# -- the error body ------------------------------------------------------------------------


class ErrorDetail(ResponseModel):
    """What went wrong."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    code: Annotated[str, Field(pattern="^[a-z0-9_]+$")]
    """A stable snake_case code such as `unknown_field`."""
    message: Annotated[str, Field(min_length=1)]
    """A sentence for a person."""
    # absent, not null, when no field is at fault
    field: Annotated[str | None, WithJsonSchema({"type": "string"})] = None
    """The request field (dotted path) or query parameter at fault, when one is."""


class Error(ResponseModel):
    """Every error the API answers: `{"error": {"code", "message", "field"?}}`."""

    error: ErrorDetail

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
