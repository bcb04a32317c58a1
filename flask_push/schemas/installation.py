"""A mobile app install that receives FCM or APNs pushes: ``/installations``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .. import validation
from ..errors import ValidationError
from ..providers import platforms
from .base import NotNull, ResponseModel, WireModel, ecma, refuse
from .fields import (
    Name,
    Pattern,
    RowId,
    ShortText,
    TargetStatus,
    Text,
    TimeZone,
    Topics,
    UserId,
    Whole,
)

#: the installations' device types: each registered kind's platform
if TYPE_CHECKING:  # made at run time, from the registry
    DeviceType = str
else:
    DeviceType = Literal[tuple(platforms())]
#: the platforms' token shapes, each checked against its own device type
_TOKENS = {name: spec.token_pattern for name, spec in platforms().items() if spec.token_pattern}
#: an APNs badge: a 32-bit count
Badge = Annotated[int, Whole(0, 2**31 - 1)]
#: what any platform's token is made of; the shape of the device type's own tokens
#: is checked against the device type
_ANY_TOKEN = "|".join(t.pattern.removeprefix("^").removesuffix("\\Z") for t in _TOKENS.values())
DeviceToken = Annotated[
    str,
    Text(512),
    Pattern(
        re.compile(f"^(?:{_ANY_TOKEN})\\Z"),
        "invalid_device_token",
        "must be "
        + " or ".join(spec.token_message.removeprefix("must be ") for spec in platforms().values()),
    ),
    NotNull,
]


#: the platform whose installations run Live Activities (APNs), and its token shape:
#: a Live Activity's own push token and the app's push-to-start token are APNs tokens
_LIVE = next(spec for spec in platforms().values() if spec.live_activities)
LIVE_PLATFORMS = tuple(name for name, spec in platforms().items() if spec.live_activities)
ActivityToken = Annotated[
    str,
    Text(512),
    Pattern(_LIVE.token_pattern or re.compile(".+"), "invalid_device_token", _LIVE.token_message),
    NotNull,
]


def live_token(value: str, device_type: str, field: str) -> str:
    """``value`` as stored (lower case hex), when ``device_type`` runs Live Activities."""
    if device_type not in LIVE_PLATFORMS:
        raise ValidationError(
            f"is only for {' and '.join(LIVE_PLATFORMS)} installations, whose apps run "
            f"Live Activities; this one is {device_type!r}",
            field=field,
            code="invalid_value",
        )
    return _LIVE.device_token(value)


def _absent() -> Any:
    return None


class InstallationUpdate(WireModel):
    """Fields to change; the device type and app stay."""

    # absent is "unchanged"; null is refused: every installation has a token
    device_token: DeviceToken = Field(default_factory=_absent)
    """The APNs device token as hex (`ios`) or the FCM registration token (`android`)."""
    user_id: UserId | None = None
    """Whose device this is: the caller when absent or null; only an admin may name
    another user."""
    subscriptions: Topics | None = None
    badge: Badge | None = None
    time_zone: TimeZone | None = None
    """An IANA time zone such as `Europe/Paris`."""
    app_version: Annotated[str, Text(64)] | None = None
    push_to_start_token: ActivityToken | None = None
    """iOS: the app's push-to-start token (ActivityKit's `pushToStartToken`), with
    which `push.activity(event="start")` starts a Live Activity; null forgets it."""


def _when(device_type: str, properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema rule on ``properties`` for the installations of ``device_type``."""
    return {
        "if": {"properties": {"deviceType": {"const": device_type}}, "required": ["deviceType"]},
        "then": {"properties": properties},
    }


#: each device type's tokens have its platform's shape, and only the apps that run
#: Live Activities have a push-to-start token
_PLATFORM_RULES: list[Any] = [
    *(_when(name, {"deviceToken": {"pattern": ecma(token)}}) for name, token in _TOKENS.items()),
    *(
        _when(name, {"pushToStartToken": {"type": "null"}})
        for name in platforms()
        if name not in LIVE_PLATFORMS
    ),
]


class InstallationCreate(InstallationUpdate):
    """A device to register; a known (appId, deviceToken) is updated and re-bound."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": _PLATFORM_RULES,
            "examples": [
                {
                    "appId": "com.example.shop",
                    "deviceType": "android",
                    "deviceToken": "fcm-token_" + "a1B2c3D4e5" * 6,
                    "subscriptions": ["offers"],
                    "timeZone": "Europe/Paris",
                    "appVersion": "2.4.1",
                }
            ],
        }
    )

    app_id: Annotated[ShortText, NotNull]
    device_type: DeviceType
    # required here, where it names the device
    device_token: DeviceToken

    @model_validator(mode="after")
    def _token_of_its_platform(self) -> InstallationCreate:
        try:
            self.device_token = validation.device_token(self.device_token, self.device_type)
            if self.push_to_start_token is not None:
                self.push_to_start_token = live_token(
                    self.push_to_start_token, self.device_type, "pushToStartToken"
                )
        except ValidationError as err:
            raise refuse(err.code, err.message, field=err.field) from None
        return self


class Installation(ResponseModel):
    """A mobile app install that receives FCM (android) or APNs (ios) pushes."""

    id: Annotated[str, RowId("ins")]
    app_id: str
    app_version: str | None
    badge: int | None
    device_token: str
    device_type: DeviceType
    status: TargetStatus
    dead_reason: str | None
    dead_at: datetime | None
    subscriptions: list[str]
    time_zone: str | None
    user_id: str | None
    push_to_start_token: str | None
    created_at: datetime = Field(alias="created")
    modified_at: datetime = Field(alias="modified")

    @field_validator("subscriptions", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return value or []


class ActivityTokenCreate(WireModel):
    """An iOS Live Activity's own push token (ActivityKit's `pushTokenUpdates`)."""

    activity_id: Annotated[Name, NotNull]
    """The id `push.activity()` names the activity by."""
    push_token: ActivityToken
    """The Live Activity's push token, as hex."""


class ActivityTokenShown(ResponseModel):
    """A Live Activity's push token, on the installation that runs it."""

    installation_id: Annotated[str, RowId("ins")]
    activity_id: str
    push_token: str
    created_at: datetime
