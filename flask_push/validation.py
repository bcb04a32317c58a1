"""Checks for untrusted input, shared by the Python API and the HTTP API.

Each check returns the normalized value or raises
:class:`~flask_push.errors.ValidationError` naming the field.
"""

from __future__ import annotations

import binascii
import fnmatch
import ipaddress
import re
import zoneinfo
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid.utils import b64urldecode

from .errors import ValidationError

MAX_ENDPOINT_LENGTH = 2048
TOPIC = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}\Z")
MAX_TOPICS = 50
# Hosts that are only ever this machine, whatever DNS says.
_LOOPBACK_NAMES = ("localhost", "*.localhost", "localhost.localdomain")
# Dotted digits, or hex/octal parts: forms that resolvers read as an IPv4
# address (127.1, 0x7f.0.0.1, 2130706433) though ipaddress does not.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*\Z")


def text(
    value: Any, field: str, *, max_length: int, required: bool = False, allow_empty: bool = False
) -> str | None:
    """A string of at most ``max_length`` characters, or None when absent and not required."""
    if value is None:
        if required:
            raise ValidationError("is required", field=field, code="required")
        return None
    if not isinstance(value, str):
        raise ValidationError("must be a string", field=field, code="invalid_type")
    if not value and not allow_empty:
        raise ValidationError("must not be empty", field=field, code="invalid_value")
    if "\x00" in value or not _is_utf8(value):
        # PostgreSQL refuses NUL in text; an unpaired surrogate cannot be encoded at all
        raise ValidationError(
            "must not contain NUL or unpaired surrogate characters",
            field=field,
            code="invalid_value",
        )
    if len(value) > max_length:
        raise ValidationError(
            f"must be at most {max_length} characters", field=field, code="too_long"
        )
    return value


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def integer(value: Any, field: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(
            f"must be a whole number from {low} to {high}", field=field, code="invalid_value"
        )
    return value


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("must be true or false", field=field, code="invalid_type")
    return value


def topics(value: Any, field: str = "topics") -> list[str]:
    """A list of topic names: letters, digits and ``_ . : -``, each up to 64 characters."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_TOPICS:
        raise ValidationError(
            f"must be a list of at most {MAX_TOPICS} topic names", field=field, code="invalid_value"
        )
    for name in value:
        if not isinstance(name, str) or not TOPIC.match(name):
            raise ValidationError(
                f"has {name!r}, but topic names are 1-64 letters, digits, '_', '.', ':' or '-'",
                field=field,
                code="invalid_value",
            )
    return sorted(set(value))


def link(value: Any, field: str = "url") -> str | None:
    """A link shown to a user: a same-site path or an http(s) URL, never ``javascript:``."""
    url = text(value, field, max_length=2048)
    if url is None:
        return None
    if url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[": an unbalanced IPv6 bracket
        parts = urlsplit("")
    if parts.scheme in ("http", "https") and parts.hostname:
        return url
    raise ValidationError(
        "must be a path such as '/orders/42' or an http(s) URL", field=field, code="invalid_url"
    )


def time_zone(value: Any, field: str = "timeZone") -> str | None:
    name = text(value, field, max_length=64)
    if name is None:
        return None
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ValidationError(
            f"must be an IANA time zone such as 'Europe/Paris', got {name!r}",
            field=field,
            code="invalid_value",
        ) from err
    return name


def json_object(value: Any, field: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError("must be a JSON object", field=field, code="invalid_type")
    return value


# -- Web Push subscriptions --------------------------------------------------


def is_special_address(host: str) -> bool:
    """Is ``host`` an IP literal, or a name that always means this machine?"""
    if any(fnmatch.fnmatchcase(host, name) for name in _LOOPBACK_NAMES):
        return True
    if _NUMERIC_HOST.match(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host_allowed(host: str, patterns: Iterable[str]) -> bool:
    if is_special_address(host):
        # An IP literal or loopback name only ever passes by being named exactly,
        # so that a wildcard such as "*" can never open the way to 127.0.0.1,
        # 169.254.169.254 (cloud metadata) or the private network.
        return any(host == pattern for pattern in patterns)
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)


def endpoint(value: Any, *, allowed_hosts: Iterable[str], allow_http: bool) -> str:
    """A Web Push endpoint our server may later POST to, checked against SSRF.

    ``https`` only (unless ``allow_http``), no user info, and a host that one of
    ``allowed_hosts`` (fnmatch patterns, port ignored) matches; IP literals and
    loopback names only when a pattern names them exactly.
    """
    url = text(value, "endpoint", max_length=MAX_ENDPOINT_LENGTH, required=True) or ""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as err:
        raise ValidationError(
            "is not a valid URL", field="endpoint", code="invalid_endpoint"
        ) from err
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise ValidationError(
            "must be an https URL"
            + ("" if allow_http else " (set PUSH_ALLOW_HTTP_ENDPOINTS for a local test service)"),
            field="endpoint",
            code="invalid_endpoint",
        )
    if not host or parts.username is not None or parts.password is not None:
        raise ValidationError(
            "must name a host and carry no user name or password",
            field="endpoint",
            code="invalid_endpoint",
        )
    if not _host_allowed(host, allowed_hosts):
        raise ValidationError(
            f"points at {host!r}, which is not a known push service; "
            "add it to PUSH_ENDPOINT_HOSTS if it is one",
            field="endpoint",
            code="endpoint_not_allowed",
        )
    return url


def _b64url(value: Any, field: str) -> bytes:
    raw = text(value, field, max_length=256, required=True) or ""
    try:
        return bytes(b64urldecode(raw.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeEncodeError) as err:
        raise ValidationError("must be base64url", field=field, code="invalid_key") from err


def p256dh(value: Any, field: str = "keys.p256dh") -> str:
    """The browser's ECDH key: a 65-byte uncompressed point that lies on P-256."""
    raw = _b64url(value, field)
    try:
        if len(raw) != 65 or raw[0] != 4:
            raise ValueError("not an uncompressed point")
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as err:
        raise ValidationError(
            "must be an uncompressed P-256 public key (65 bytes, base64url)",
            field=field,
            code="invalid_key",
        ) from err
    return str(value).rstrip("=")


def auth_secret(value: Any, field: str = "keys.auth") -> str:
    """The browser's authentication secret: exactly 16 bytes."""
    if len(_b64url(value, field)) != 16:
        raise ValidationError("must be 16 bytes, base64url", field=field, code="invalid_key")
    return str(value).rstrip("=")


# -- Mobile installations -----------------------------------------------------

DEVICE_TYPES = ("ios", "android")
# APNs tokens are hex; Apple says not to rely on their length, so accept 32 to 100 bytes.
APNS_TOKEN = re.compile(r"^(?:[0-9a-fA-F]{2}){32,100}\Z")
# FCM registration tokens are about 160 characters of base64url plus ':'.
FCM_TOKEN = re.compile(r"^[A-Za-z0-9_\-:.]{32,512}\Z")


def device_type(value: Any) -> str:
    if value not in DEVICE_TYPES:
        raise ValidationError(
            "must be 'ios' or 'android'", field="deviceType", code="invalid_value"
        )
    return str(value)


def device_token(value: Any, kind: str) -> str:
    """A device token in its platform's shape: hex for APNs, base64url-ish for FCM."""
    token = text(value, "deviceToken", max_length=512, required=True) or ""
    if kind == "ios":
        if not APNS_TOKEN.match(token):
            raise ValidationError(
                "must be the APNs device token as hex (64 or more hex digits)",
                field="deviceToken",
                code="invalid_device_token",
            )
        return token.lower()
    if not FCM_TOKEN.match(token):
        raise ValidationError(
            "must be the FCM registration token the Firebase SDK returned",
            field="deviceToken",
            code="invalid_device_token",
        )
    return token
