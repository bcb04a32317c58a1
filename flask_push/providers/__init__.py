"""Push providers: one module per platform, each a :class:`~.base.Provider`.

The registry maps a kind (``webpush``, ``fcm``, ``apns``) or a dotted path to
the class, so a host can plug in its own provider.
"""

from __future__ import annotations

import importlib

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


__all__ = ["REGISTRY", "Provider", "provider_class"]
