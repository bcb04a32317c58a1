"""``/providers``: push credentials per app id. Secrets are write-only.

The models say which settings each kind has and of what type; what a value must
be (a real key, a contact URI...) is for the provider's kind to check (its
``normalize``, see :mod:`flask_push.providers`), the same check ``init_app`` runs on
``app.config``. The patterns shown here are that
check's, with the white space it strips.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast

from pydantic import (
    Field,
    PlainValidator,
    RootModel,
    create_model,
    field_validator,
)
from pydantic.fields import FieldInfo

from ..providers import kind as kind_of
from ..providers import kinds
from .base import Documented, NotNull, ResponseModel, WireModel, refuse
from .fields import RowId, ShortText

AppId = Annotated[ShortText, NotNull]
#: every registered kind (:mod:`flask_push.providers`); each names its settings' models
if TYPE_CHECKING:  # made at run time, from the registry
    Kind = str
else:
    Kind = Literal[tuple(kinds())]


def _title(name: str) -> str:
    """The prefix of a kind's model names: ``WebPushSettings`` -> ``WebPush``."""
    wire = kinds()[name].wire
    return wire.__name__.removesuffix("Settings") if wire else name.title()


#: each kind's settings, as written
SETTINGS: dict[str, type[WireModel]] = {
    name: spec.wire for name, spec in kinds().items() if spec.wire is not None
}


class _ProviderBody(WireModel):
    app_id: AppId
    kind: Kind


class ProviderHead(_ProviderBody):
    """A body's app id and kind, read first: the kind says which settings it has."""

    settings: dict[str, Any] = {}


#: each kind's request body
CREATE: dict[str, type[_ProviderBody]] = {
    name: create_model(
        f"{_title(name)}ProviderCreate",
        __base__=_ProviderBody,
        kind=(cast(Any, Literal[name]), ...),
        settings=(settings, ...),
    )
    for name, settings in SETTINGS.items()
}

if TYPE_CHECKING:
    _AnyCreate = _ProviderBody
else:
    _AnyCreate = Annotated[Union[tuple(CREATE.values())], Field(discriminator="kind")]  # noqa: UP007


class ProviderCreate(RootModel[_AnyCreate]):
    """Credentials of one kind for one app id; an app id has at most one provider of
    each kind. (What the document shows: each kind's body is checked on its own.)"""


def _absent() -> Any:
    return None


def _change(settings: type[WireModel]) -> type[WireModel]:
    """``settings`` with none required: what a PATCH may change."""
    fields: Any = {
        # a factory, not a default: absent means "as stored", which is no value to show
        name: (
            field.annotation,
            FieldInfo.merge_field_infos(field, default_factory=_absent)
            if field.is_required()
            else field,
        )
        for name, field in settings.model_fields.items()
    }
    return create_model(
        settings.__name__.replace("Settings", "SettingsChange"),
        __base__=WireModel,
        __doc__=settings.__doc__,
        **fields,
    )


def _an_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise refuse("invalid_type", "must be an object")
    return value


class ProviderUpdate(WireModel):
    """Settings to change, of the provider's kind; secrets left out are kept, derived
    settings recomputed."""

    settings: Annotated[
        dict[str, Any],
        # checked with the stored ones, as the settings of the provider's kind
        PlainValidator(
            _an_object,
            json_schema_input_type=Union[tuple(_change(model) for model in SETTINGS.values())],  # noqa: UP007 - made at run time
        ),
    ] = {}


# -- answers ------------------------------------------------------------------------------


class _Provider(ResponseModel):
    id: Annotated[str, RowId("prv")]
    app_id: str
    created_at: datetime
    modified_at: datetime

    @field_validator("secrets_set", mode="before", check_fields=False)
    @classmethod
    def _names(cls, value: Any) -> Any:
        return sorted(value or {}) if isinstance(value, dict) else value


def _secret_names(kind: str) -> Documented:
    """The secrets of ``kind`` that are stored, by name: their values are never shown."""
    names = sorted(kind_of(kind).secret_names)
    return Documented(
        uniqueItems=True,
        items={"type": "string", "enum": names},
        description="The secrets stored, by name; their values are never returned.",
    )


#: each kind's answer
ANSWERS: dict[str, type[_Provider]] = {
    name: create_model(
        f"{_title(name)}Provider",
        __base__=_Provider,
        kind=(cast(Any, Literal[name]), ...),
        settings=(spec.shown, ...),
        secrets_set=(
            Annotated[list[str], _secret_names(name)],
            Field(validation_alias="secrets"),
        ),
    )
    for name, spec in kinds().items()
    if spec.shown is not None
}

if TYPE_CHECKING:
    _AnyProvider = _Provider
else:
    _AnyProvider = Annotated[Union[tuple(ANSWERS.values())], Field(discriminator="kind")]  # noqa: UP007


class Provider(RootModel[_AnyProvider]):
    """Push credentials; secrets are write-only."""

    @classmethod
    def of(cls, row: Any, settings: Mapping[str, Any] | None = None) -> Provider:
        """The answer for a stored ``row``; ``settings`` shown instead of its own."""
        answer = ANSWERS[row.kind].model_validate(row)
        if settings is not None:
            shown = type(answer.settings).model_validate(settings)  # type: ignore[attr-defined]
            answer = answer.model_copy(update={"settings": shown})
        return cls(answer)

    def to_json(self) -> dict[str, Any]:
        return self.root.to_json()


class ProviderList(ResponseModel):
    """Every provider, by app id and kind."""

    total_count: Annotated[int, Documented(minimum=0)]
    items: list[Provider]
