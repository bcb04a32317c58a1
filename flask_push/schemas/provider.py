"""``/providers``: push credentials per app id. Secrets are write-only.

The models say which settings each kind has and of what type; what a value must
be (a real key, a contact URI...) is for the provider's kind to check (its
``normalize``, see :mod:`flask_push.providers`), the same check ``init_app`` runs on
``app.config``. The patterns shown here are that
check's, with the white space it strips.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    ConfigDict,
    Field,
    PlainValidator,
    RootModel,
    WithJsonSchema,
    create_model,
    field_validator,
)
from pydantic.fields import FieldInfo

from ..providers import kind as kind_of
from ..providers.apns import APPLE_ID, BUNDLE_ID
from .base import Documented, NotNull, ResponseModel, WireModel, ecma, refuse, refuse_as
from .fields import RowId, ShortText

#: what ``str.strip()`` takes off both ends of a setting
_SPACE = (
    "[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000]*"
)


def _stripped(pattern: Any) -> str:
    """A setting's pattern as the document shows it: white space around is stripped."""
    body = ecma(pattern).removeprefix("^").removesuffix("$")
    return f"^{_SPACE}{body}{_SPACE}$"


AppId = Annotated[ShortText, NotNull]
Kind = Literal["webpush", "fcm", "apns"]


class WebPushSettings(WireModel):
    """VAPID: the key browsers' push services check our pushes with."""

    private_key: str
    """Secret. The VAPID P-256 private key: PEM, or raw or DER base64url
    (`flask push vapid-keys`)."""
    public_key: str | None = None
    """Derived from the private key when absent."""
    subject: Annotated[str, Documented(pattern=f"^{_SPACE}(?:mailto:|https://)")]
    """A contact URI: `mailto:you@example.com` or `https://example.com`."""


class FcmSettings(WireModel):
    """Firebase Cloud Messaging (HTTP v1)."""

    credentials: Annotated[
        dict[str, Any] | str,
        refuse_as(
            "invalid_setting", "must be the service-account JSON object from the Firebase console"
        ),
    ]
    """Secret. The service-account key (JSON object, or its text) from the Firebase console."""
    project_id: str | None = None
    """Default: the credentials' project_id."""
    base_url: str | None = None
    """An http(s) origin; default https://fcm.googleapis.com."""


class ApnsSettings(WireModel):
    """Apple Push Notification service, token auth."""

    key: str
    """Secret. The .p8 auth key from Apple, as PEM text."""
    key_id: Annotated[str, Documented(pattern=_stripped(APPLE_ID))]
    team_id: Annotated[str, Documented(pattern=_stripped(APPLE_ID))]
    topic: Annotated[str, Documented(pattern=_stripped(BUNDLE_ID))]
    """The app's bundle id."""
    sandbox: bool = False
    base_url: str | None = None
    """An https origin; default Apple's."""


#: each kind's settings, as written
SETTINGS: dict[str, type[WireModel]] = {
    "webpush": WebPushSettings,
    "fcm": FcmSettings,
    "apns": ApnsSettings,
}


class _ProviderBody(WireModel):
    app_id: AppId
    kind: Kind


class ProviderHead(_ProviderBody):
    """A body's app id and kind, read first: the kind says which settings it has."""

    settings: dict[str, Any] = {}


class WebPushProviderCreate(_ProviderBody):
    kind: Literal["webpush"]
    settings: WebPushSettings


class FcmProviderCreate(_ProviderBody):
    kind: Literal["fcm"]
    settings: FcmSettings


class ApnsProviderCreate(_ProviderBody):
    kind: Literal["apns"]
    settings: ApnsSettings


#: each kind's request body
CREATE: dict[str, type[_ProviderBody]] = {
    "webpush": WebPushProviderCreate,
    "fcm": FcmProviderCreate,
    "apns": ApnsProviderCreate,
}


_AnyCreate = Annotated[
    WebPushProviderCreate | FcmProviderCreate | ApnsProviderCreate, Field(discriminator="kind")
]


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


class WebPushPublicSettings(ResponseModel):
    public_key: str
    subject: str


class FcmPublicSettings(ResponseModel):
    project_id: str
    base_url: str


class ApnsPublicSettings(ResponseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    key_id: str
    team_id: str
    topic: str
    sandbox: bool
    base_url: Annotated[str | None, WithJsonSchema({"type": "string"})] = Field(
        default=None, exclude_if=lambda value: value is None
    )
    """Absent for Apple's own origin."""


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


class WebPushProvider(_Provider):
    kind: Literal["webpush"]
    settings: WebPushPublicSettings
    secrets_set: Annotated[list[str], _secret_names("webpush")] = Field(validation_alias="secrets")


class FcmProvider(_Provider):
    kind: Literal["fcm"]
    settings: FcmPublicSettings
    secrets_set: Annotated[list[str], _secret_names("fcm")] = Field(validation_alias="secrets")


class ApnsProvider(_Provider):
    kind: Literal["apns"]
    settings: ApnsPublicSettings
    secrets_set: Annotated[list[str], _secret_names("apns")] = Field(validation_alias="secrets")


ANSWERS: dict[str, type[_Provider]] = {
    "webpush": WebPushProvider,
    "fcm": FcmProvider,
    "apns": ApnsProvider,
}


_AnyProvider = Annotated[WebPushProvider | FcmProvider | ApnsProvider, Field(discriminator="kind")]


class Provider(RootModel[_AnyProvider]):
    """Push credentials; secrets are write-only."""

    @classmethod
    def of(cls, row: Any) -> Provider:
        return cls(ANSWERS[row.kind].model_validate(row))  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return self.root.to_json()


class ProviderList(ResponseModel):
    """Every provider, by app id and kind."""

    total_count: Annotated[int, Documented(minimum=0)]
    items: list[Provider]
