"""What a push provider kind is made of, and the checks its settings share.

Each provider module declares its :class:`ProviderKind` (settings, their check,
the extra to install, the installations it serves, how its device tokens look)
as its class's ``spec``; :mod:`flask_push.providers` lists them. The same check
serves ``PUSH_VAPID_*`` / ``PUSH_FCM_*`` / ``PUSH_APNS_*`` in ``app.config`` and
the ``/providers`` API, so a key that ``init_app`` refuses is refused by the API
with the same explanation. Each kind lists its settings under the camelCase
names the API uses and the config key each one comes from; secrets are marked
so that the API never returns them.

``KINDS``, ``WEBPUSH``, ``FCM`` and ``APNS`` are read from the registry.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import SplitResult, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from py_vapid.utils import b64urlencode
from pydantic.alias_generators import to_snake

from .errors import ProviderNotInstalled, ValidationError

if TYPE_CHECKING:
    from .config import PushSettings


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
    #: needed to turn the provider on (what :attr:`ProviderKind.how_to_configure` names)
    required: bool = True
    #: has a default of its own: set alone, it does not ask for the trigger
    standalone: bool = False
    #: ``app.config`` may name a file holding it, unless the value contains this
    #: marker (the API never reads files)
    file_unless: str | None = None
    #: defaults to ``app.debug`` in ``app.config`` (APNs' sandbox)
    debug_default: bool = False


def _no_options(settings: PushSettings) -> dict[str, Any]:
    return {}


def site_url_option(settings: PushSettings) -> dict[str, Any]:
    """``site_url``, for the providers to phones: they resolve ``image`` against it."""
    return {"site_url": settings.site_url}


@dataclass(frozen=True)
class ProviderKind:
    """A push platform: what it needs, how its settings are checked, what it serves."""

    name: str
    settings: tuple[Setting, ...]
    #: the setting whose presence turns the provider on in ``app.config``
    trigger: str
    #: (module, pip extra) the provider's transport needs, if optional
    requires: tuple[str, str] | None
    normalize: Callable[[Mapping[str, Any]], dict[str, Any]]
    #: checks the :attr:`Setting.standalone` settings alone (given without the
    #: trigger, for providers stored through the API)
    normalize_standalone: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    #: what its pushes go to: browsers' subscriptions or apps' device tokens
    targets: Literal["subscription", "device"] = "device"
    #: the installations' ``deviceType`` it delivers to (``None``: subscriptions)
    platform: str | None = None
    #: a device token of its platform, and what to say when one is not
    token_pattern: re.Pattern[str] | None = None
    token_message: str = "must be a device token"
    #: APNs tokens are hex, stored in lower case
    token_lower: bool = False
    #: the provider's constructor options taken from :class:`~flask_push.config.PushSettings`
    options: Callable[[PushSettings], dict[str, Any]] = _no_options
    #: its settings on the wire (``/providers``), as written and as shown: pydantic
    #: models (:class:`~flask_push.schemas.base.WireModel`, ``ResponseModel``)
    wire: type[Any] | None = None
    shown: type[Any] | None = None
    #: who answers its pushes, as a delivery's timeline names it
    service: str = "the push service"
    #: it shows ``push.activity`` as Live Activities, with tokens of their own
    #: (``POST /installations/<id>/activities``, ``pushToStartToken``)
    live_activities: bool = False

    @property
    def secret_names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.settings if s.secret)

    @property
    def derived_names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.settings if s.derived)

    @property
    def how_to_configure(self) -> str:
        """The config keys to set to turn it on, as a sentence's end."""
        keys = [s.config_key for s in self.settings if s.required and not s.derived]
        return " and ".join(filter(None, [", ".join(keys[:-1]), keys[-1]]))

    def describe(self, name: str) -> str | None:
        """What setting ``name`` is, from its wire model's docstring (secret or not)."""
        found = self.wire.model_fields.get(to_snake(name)) if self.wire is not None else None
        if found is None or not found.description:
            return None
        return " ".join(found.description.removeprefix("Secret. ").split())

    def check_installed(self) -> None:
        if self.requires:
            require_module(self.name, *self.requires)

    def device_token(self, token: str) -> str:
        """``token`` as stored, when it has this platform's shape.

        :raises ValidationError: ``invalid_device_token`` with :attr:`token_message`.
        """
        if self.token_pattern is not None and not self.token_pattern.match(token):
            raise ValidationError(
                self.token_message, field="deviceToken", code="invalid_device_token"
            )
        return token.lower() if self.token_lower else token


def require_module(feature: str, module: str, extra: str) -> None:
    """Raise :class:`ProviderNotInstalled` naming the pip extra when ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        raise ProviderNotInstalled(feature, extra, module)


def text(values: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = values.get(name)
    if value is None or value == "":
        if required:
            raise ValidationError("is required", field=name, code="missing_setting")
        return None
    if not isinstance(value, str):
        raise ValidationError("must be a string", field=name, code="invalid_setting")
    return value.strip()


def split_url(url: str) -> SplitResult:
    """``urlsplit``, except that an unparsable URL (say ``http://[``) reads as empty."""
    try:
        return urlsplit(url)
    except ValueError:
        return urlsplit("")


def base_url(values: Mapping[str, Any], name: str, *, default: str | None) -> str | None:
    url = text(values, name, required=False)
    if url is None:
        return default
    parts = split_url(url)
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
        given = private_key.strip()
        # base64url has neither, and the file system is not asked: this also checks
        # what admins post to /providers
        if "-----BEGIN" not in given and ("/" in given or given.endswith(".pem")):
            raise ValidationError(
                "looks like the path of a file: give the key itself (its PEM text, or "
                "raw base64url), e.g. Path(...).read_text()",
                field="privateKey",
                code="invalid_setting",
            ) from err
        raise ValidationError(
            "is not a P-256 private key (PEM, or raw/DER base64url); make one with "
            "`flask push vapid-keys` (with this key unset, so that the app loads)",
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


def __getattr__(name: str) -> Any:
    # The kinds are declared by their provider modules and listed by the registry.
    if name == "KINDS":
        from .providers import kinds

        return kinds()
    if name in ("WEBPUSH", "FCM", "APNS"):
        from .providers import kind

        return kind(name.lower())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
