"""A browser's Web Push subscription: ``POST /subscriptions`` and what it answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator
from pydantic.json_schema import JsonSchemaValue

from .. import validation
from ..errors import ValidationError
from .base import AfterCheck, Context, NotNull, ResponseModel, WireModel, refuse, refuse_as, then
from .fields import Pattern, RowId, TargetStatus, Text, Topics

#: ``datetime`` ends with the year 9999: 253402300800000 ms is 10000-01-01
MAX_EPOCH_MS = 253_402_300_800_000

#: a 65-byte uncompressed point (0x04 first, so "B"), base64url: 87 characters
P256DH = re.compile(r"^B[A-Za-z0-9_-]{86}=?\Z")
#: 16 bytes, base64url: 22 characters
AUTH = re.compile(r"^[A-Za-z0-9_-]{22}={0,2}\Z")


class PushKeys(WireModel):
    """The browser's keys, from `PushSubscription.toJSON()`."""

    p256dh: Annotated[
        str,
        Field(alias="p256dh", json_schema_extra={"format": "p256-public-key"}),
        Text(256),
        Pattern(P256DH, "invalid_key", validation.P256DH_REFUSED),
        then(validation.p256dh),
        NotNull,
    ]
    """The browser's P-256 ECDH public key: a 65-byte uncompressed point on the curve,
    base64url (format `p256-public-key`)."""
    auth: Annotated[
        str,
        Text(256),
        Pattern(AUTH, "invalid_key", "must be 16 bytes, base64url"),
        then(validation.auth_secret),
        NotNull,
    ]
    """The browser's 16-byte authentication secret, base64url."""


@dataclass(frozen=True)
class _Endpoint(AfterCheck):
    """A push service URL our server may POST to: :func:`flask_push.validation.endpoint`
    with the app's ``PUSH_ENDPOINT_HOSTS`` and ``PUSH_ALLOW_HTTP_ENDPOINTS``."""

    def check(self, value: str, context: Context) -> str:
        try:
            return validation.endpoint(
                value,
                allowed_hosts=context.endpoint_hosts,
                allow_http=context.allow_http_endpoints,
            )
        except ValidationError as err:
            raise refuse(err.code, err.message) from None

    def document(self, json_schema: JsonSchemaValue, context: Context) -> JsonSchemaValue:
        schemes = "https?" if context.allow_http_endpoints else "https"
        return {
            **json_schema,
            "format": "push-endpoint",
            # what a URI is made of: printable ASCII, no spaces
            "pattern": f"^{schemes}://[!-~]+$",
            "description": "The push service URL (format `push-endpoint`): https"
            + (" or http" if context.allow_http_endpoints else "")
            + ", on a host PUSH_ENDPOINT_HOSTS allows ("
            + ", ".join(context.endpoint_hosts)
            + "), an internationalized host in its xn-- form, an IP address only in its "
            "canonical form and when named there exactly, and no user name or password.",
        }


#: milliseconds since the epoch, or null
Expiration = Annotated[
    float,
    Field(ge=0, lt=MAX_EPOCH_MS, allow_inf_nan=False),
    refuse_as("invalid_value", "must be null or milliseconds since the epoch"),
]


class SubscriptionCreate(WireModel):
    """`PushSubscription.toJSON()` of the browser, plus optional topics."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "endpoint": "https://fcm.googleapis.com/fcm/send/dGVzdC1zdWJzY3JpcHRpb24",
                    "expirationTime": None,
                    "keys": {
                        "p256dh": "BM4PVF27c42QVs2f4QRsGCdhrOkkTro9WjE1Zyr2suYFqXsXqeeUB0rr"
                        "neVtY2g8_XuGKQXuobZ8WPZglfCKyZs",
                        "auth": "bAZkV59fMoFBf4LgLtCkAA",
                    },
                    "topics": ["offers"],
                }
            ]
        }
    )

    endpoint: Annotated[str, Text(validation.MAX_ENDPOINT_LENGTH), _Endpoint(), NotNull]
    expiration_time: Expiration | None = None
    """Milliseconds since the epoch."""
    keys: Annotated[
        PushKeys,
        refuse_as("required", "must be an object {p256dh, auth}", when=lambda e: e["loc"] == ()),
    ]
    topics: Topics | None = None
    old_endpoint: Annotated[str, Text(validation.MAX_ENDPOINT_LENGTH)] | None = None
    """The endpoint this one replaces (the browser renewed it, or it was made with an
    old key or reported gone): the caller's own subscription there is removed (a dead
    one is kept until pruned), and its topics carry over unless `topics` is given.
    Never posted to."""

    @property
    def expires_at(self) -> datetime | None:
        if self.expiration_time is None:
            return None
        return datetime.fromtimestamp(self.expiration_time / 1000, timezone.utc)


class Subscription(ResponseModel):
    """A browser's Web Push subscription. Its keys are never returned."""

    id: Annotated[str, RowId("sub")]
    endpoint: str
    user_id: str | None
    """The owner; null for an anonymous browser."""
    topics: list[str]
    user_agent: str | None
    expiration_time: int | None = Field(validation_alias="expires_at")
    """Milliseconds since the epoch."""
    status: TargetStatus
    dead_reason: str | None
    dead_at: datetime | None
    created_at: datetime
    last_seen_at: datetime

    @field_validator("expiration_time", mode="before")
    @classmethod
    def _milliseconds(cls, value: Any) -> Any:
        return int(value.timestamp() * 1000) if isinstance(value, datetime) else value

    @field_validator("topics", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return value or []
