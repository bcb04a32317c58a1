"""Push providers: one module per platform, each a :class:`~.base.Provider`.

The registry is the one list of provider kinds. Each entry names a provider class
whose ``spec`` (a :class:`~flask_push.credentials.ProviderKind`) says everything
the rest of flask-push needs: its settings and their check, the extra to install,
what its pushes go to, the installations it serves and how their tokens look.
Configuration, dispatch, the API and the CLI ask here and never name a provider.
A provider module imports its optional client library only when it sends, so its
kind can be read (and a missing extra reported) without it.

A host can also plug in its own provider class by dotted path.
"""

from __future__ import annotations

import importlib
from functools import cache

from ..credentials import ProviderKind
from .base import Provider

#: kind -> "module:Class"; imported on first use so optional clients stay optional
REGISTRY = {
    "webpush": "flask_push.providers.webpush:WebPushProvider",
    "fcm": "flask_push.providers.fcm:FCMProvider",
    "apns": "flask_push.providers.apns:APNsProvider",
}


def provider_class(name: str) -> type[Provider]:
    """The provider class for a kind or a dotted path ``package.module:Class``."""
    path = REGISTRY.get(name, name)
    module_name, _, class_name = path.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"{path} is not a flask_push Provider")
    return cls


@cache
def kinds() -> dict[str, ProviderKind]:
    """Every registered kind, by the name the API and the database use, in order."""
    found = {}
    for name in REGISTRY:
        kind = provider_class(name).spec
        if kind is None or kind.name != name:
            raise TypeError(f"{REGISTRY[name]} does not declare the kind {name!r}")
        found[name] = kind
    return found


def kind(name: str) -> ProviderKind:
    """The registered kind ``name``; :class:`KeyError` when there is none."""
    return kinds()[name]


def kind_for_platform(device_type: str) -> str:
    """The kind that delivers to installations of ``device_type`` (itself if none)."""
    return next((k.name for k in kinds().values() if k.platform == device_type), device_type)


def subscriptions_kind() -> str:
    """The kind that delivers to browsers' subscriptions."""
    return next(k.name for k in kinds().values() if k.targets == "subscription")


def platforms() -> dict[str, ProviderKind]:
    """Installations' device types -> the kind that serves them."""
    return {k.platform: k for k in kinds().values() if k.platform is not None}


def service_name(name: str) -> str:
    """Who answers the pushes of kind ``name``, as a sentence names it ("the browser's
    push service"); "the push service" for a kind that is not registered."""
    found = kinds().get(name)
    return found.service if found is not None else "the push service"


def settings_to_set(name: str) -> str:
    """The config keys that turn the provider of kind ``name`` on, as a sentence's end."""
    found = kinds().get(name)
    return found.how_to_configure if found else f"the {name} provider's settings"


def not_configured_error(name: str) -> str:
    """What a target of kind ``name`` says when no such provider is configured."""
    return (
        f"no {name} provider is configured, so this target cannot be reached; "
        f"set {settings_to_set(name)}"
    )


__all__ = [
    "REGISTRY",
    "Provider",
    "kind",
    "kind_for_platform",
    "kinds",
    "not_configured_error",
    "settings_to_set",
    "platforms",
    "provider_class",
    "service_name",
    "subscriptions_kind",
]
