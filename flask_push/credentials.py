"""The settings of each push provider kind, checked in one place.

The same checks serve ``PUSH_VAPID_*`` / ``PUSH_FCM_*`` / ``PUSH_APNS_*`` in
``app.config`` and the ``/providers`` API, so a key that ``init_app`` refuses
is refused by the API with the same explanation. Each kind lists its settings
under the camelCase names the API uses and the config key each one comes from;
secrets are marked so that the API never returns them.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from py_vapid import Vapid
from py_vapid.utils import b64urlencode

from .errors import ProviderNotInstalled, ValidationError


@dataclass(frozen=True)
class Setting:
    """One setting of a provider kind."""

    #: camelCase name in the API's ``settings`` object
    name: str
    #: the ``app.config`` key it comes from
    config_key: str
    #: write-only: stored, used, never returned
    secret: bool = False
    #: computed from the others when left out (and recomputed when they change)
    derived: bool = False


@dataclass(frozen=True)
class ProviderKind:
    """A push platform: what it needs and how its settings are checked."""

    name: str
    settings: tuple[Setting, ...]
    #: the setting whose presence turns the provider on in ``app.config``
    trigger: str
    #: (module, pip extra) the provider's transport needs, if optional
    requires: tuple[str, str] | None
    normalize: Callable[[Mapping[str, Any]], dict[str, Any]]

    @property
    def secret_names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.settings if s.secret)

    @property
    def derived_names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.settings if s.derived)

    def check_installed(self) -> None:
        if self.requires:
            require_module(self.name, *self.requires)


def require_module(feature: str, module: str, extra: str) -> None:
    """Raise :class:`ProviderNotInstalled` naming the pip extra when ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        raise ProviderNotInstalled(feature, extra, module)


def _text(values: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = values.get(name)
    if value is None or value == "":
        if required:
            raise ValidationError("is required", field=name, code="missing_setting")
        return None
    if not isinstance(value, str):
        raise ValidationError("must be a string", field=name, code="invalid_setting")
    return value.strip()


def _split(url: str) -> SplitResult:
    """``urlsplit``, except that an unparsable URL (say ``http://[``) reads as empty."""
    try:
        return urlsplit(url)
    except ValueError:
        return urlsplit("")


def _base_url(values: Mapping[str, Any], name: str, *, default: str | None) -> str | None:
    url = _text(values, name, required=False)
    if url is None:
        return default
    parts = _split(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"must be an http(s) origin such as {default or 'https://example.com'}, got {url!r}",
            field=name,
            code="invalid_setting",
        )
    return url.rstrip("/")


def load_vapid(private_key: str) -> Vapid:
    """Parse a VAPID private key given as PEM, or as raw or DER base64url.

    :raises ValidationError: when it is not a P-256 private key.
    """
    try:
        if "-----BEGIN" in private_key:
            vapid = Vapid.from_pem(private_key.strip().encode())
        else:
            vapid = Vapid.from_string(private_key.strip())
        key = vapid.private_key
    except Exception as err:  # py-vapid raises whatever its decoder raised
        raise ValidationError(
            "is not a P-256 private key (PEM, or raw/DER base64url); "
            "run `flask push vapid-keys` to make one",
            field="privateKey",
            code="invalid_setting",
        ) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValidationError(
            "must be an elliptic-curve key on P-256", field="privateKey", code="invalid_setting"
        )
    return vapid


def vapid_public_key(vapid: Vapid) -> str:
    """The public key as browsers want it: the uncompressed point, base64url."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return str(b64urlencode(raw))


def vapid_raw_private_key(vapid: Vapid) -> str:
    """The private scalar as 32 bytes base64url: the shortest form to paste into config."""
    number = vapid.private_key.private_numbers().private_value
    return str(b64urlencode(number.to_bytes(32, "big")))


def _normalize_webpush(values: Mapping[str, Any]) -> dict[str, Any]:
    vapid = load_vapid(_text(values, "privateKey") or "")
    public = vapid_public_key(vapid)
    given = _text(values, "publicKey", required=False)
    if given is not None and given.rstrip("=") != public:
        raise ValidationError(
            "does not belong to the private key; leave it out and it is derived",
            field="publicKey",
            code="invalid_setting",
        )
    subject = _text(values, "subject") or ""
    if not (subject.startswith("mailto:") and "@" in subject) and not (
        subject.startswith("https://") and _split(subject).hostname
    ):
        raise ValidationError(
            "must be a contact URI, 'mailto:you@example.com' or 'https://example.com'",
            field="subject",
            code="invalid_setting",
        )
    return {"privateKey": vapid_raw_private_key(vapid), "publicKey": public, "subject": subject}


def _normalize_fcm(values: Mapping[str, Any]) -> dict[str, Any]:
    credentials = values.get("credentials")
    if isinstance(credentials, str):
        try:
            credentials = json.loads(credentials)
        except ValueError:
            credentials = None
    if not isinstance(credentials, dict):
        raise ValidationError(
            "must be the service-account JSON object downloaded from the Firebase console",
            field="credentials",
            code="invalid_setting",
        )
    for key in ("client_email", "private_key", "token_uri"):
        if not isinstance(credentials.get(key), str) or not credentials[key]:
            raise ValidationError(
                f"is missing {key!r}; use the service-account key file, not google-services.json",
                field="credentials",
                code="invalid_setting",
            )
    if credentials.get("type", "service_account") != "service_account":
        raise ValidationError(
            "must be a service account's key (type 'service_account')",
            field="credentials",
            code="invalid_setting",
        )
    try:
        rsa_key = serialization.load_pem_private_key(credentials["private_key"].encode(), None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:  # TypeError: encrypted
        raise ValidationError(
            "has a private_key that is not a PEM RSA key",
            field="credentials",
            code="invalid_setting",
        ) from err
    if not isinstance(rsa_key, rsa.RSAPrivateKey):
        raise ValidationError(
            "has a private_key that is not an RSA key", field="credentials", code="invalid_setting"
        )
    if _split(credentials["token_uri"]).scheme not in ("http", "https"):
        raise ValidationError(
            "has a token_uri that is not an http(s) URL",
            field="credentials",
            code="invalid_setting",
        )
    project_id = _text(values, "projectId", required=False) or credentials.get("project_id")
    if not isinstance(project_id, str) or not project_id:
        raise ValidationError(
            "is required: the credentials name no project_id",
            field="projectId",
            code="missing_setting",
        )
    return {
        "credentials": credentials,
        "projectId": project_id,
        "baseUrl": _base_url(values, "baseUrl", default="https://fcm.googleapis.com"),
    }


APPLE_ID = re.compile(r"^[A-Z0-9]{10}\Z")
BUNDLE_ID = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\Z")


def _normalize_apns(values: Mapping[str, Any]) -> dict[str, Any]:
    pem = _text(values, "key") or ""
    try:
        key = serialization.load_pem_private_key(pem.encode(), None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:  # TypeError: encrypted
        raise ValidationError(
            "must be the .p8 key from Apple (PEM text starting with -----BEGIN PRIVATE KEY-----)",
            field="key",
            code="invalid_setting",
        ) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValidationError(
            "must be an APNs auth key (P-256)", field="key", code="invalid_setting"
        )
    normalized: dict[str, Any] = {"key": pem}
    for name, what in (
        ("keyId", "the key's 10-character Key ID"),
        ("teamId", "your 10-character Team ID"),
    ):
        value = _text(values, name) or ""
        if not APPLE_ID.match(value):
            raise ValidationError(
                f"must be {what}, got {value!r}", field=name, code="invalid_setting"
            )
        normalized[name] = value
    topic = _text(values, "topic") or ""
    if not BUNDLE_ID.match(topic):
        raise ValidationError(
            f"must be the app's bundle id such as 'com.example.shop', got {topic!r}",
            field="topic",
            code="invalid_setting",
        )
    normalized["topic"] = topic
    sandbox = values.get("sandbox", False)
    if not isinstance(sandbox, bool):
        raise ValidationError("must be true or false", field="sandbox", code="invalid_setting")
    normalized["sandbox"] = sandbox
    normalized["baseUrl"] = _base_url(values, "baseUrl", default=None)
    if normalized["baseUrl"] and not normalized["baseUrl"].startswith("https://"):
        raise ValidationError(
            "must be an https origin: APNs is always TLS", field="baseUrl", code="invalid_setting"
        )
    return normalized


WEBPUSH = ProviderKind(
    name="webpush",
    settings=(
        Setting("privateKey", "PUSH_VAPID_PRIVATE_KEY", secret=True),
        Setting("publicKey", "PUSH_VAPID_PUBLIC_KEY", derived=True),
        Setting("subject", "PUSH_VAPID_SUBJECT"),
    ),
    trigger="privateKey",
    requires=None,
    normalize=_normalize_webpush,
)

FCM = ProviderKind(
    name="fcm",
    settings=(
        Setting("credentials", "PUSH_FCM_CREDENTIALS", secret=True),
        Setting("projectId", "PUSH_FCM_PROJECT_ID"),
        Setting("baseUrl", "PUSH_FCM_BASE_URL"),
    ),
    trigger="credentials",
    requires=("pyfcm", "fcm"),
    normalize=_normalize_fcm,
)

APNS = ProviderKind(
    name="apns",
    settings=(
        Setting("key", "PUSH_APNS_KEY", secret=True),
        Setting("keyId", "PUSH_APNS_KEY_ID"),
        Setting("teamId", "PUSH_APNS_TEAM_ID"),
        Setting("topic", "PUSH_APNS_TOPIC"),
        Setting("sandbox", "PUSH_APNS_SANDBOX"),
        Setting("baseUrl", "PUSH_APNS_BASE_URL"),
    ),
    trigger="key",
    requires=("aioapns", "apns"),
    normalize=_normalize_apns,
)

#: every provider kind, by the name the API and the database use
KINDS: dict[str, ProviderKind] = {kind.name: kind for kind in (WEBPUSH, FCM, APNS)}
