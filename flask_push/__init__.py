"""flask-push: push notifications for Flask apps.

Web Push, FCM and APNs delivery, a persisted notification inbox per user, and
live events, behind one ``Push(db=db)`` and ``push.init_app(app)``.
"""

from __future__ import annotations

from ._version import __version__ as __version__
from .errors import (
    BackplaneError,
    PayloadError,
    ProviderNotInstalled,
    PushConfigError,
    PushError,
    ValidationError,
)
from .extension import Push
from .inbox import SearchResult
from .outbox_state import OutboxState

__all__ = [
    "BackplaneError",
    "PayloadError",
    "OutboxState",
    "ProviderNotInstalled",
    "Push",
    "PushConfigError",
    "PushError",
    "SearchResult",
    "ValidationError",
]
