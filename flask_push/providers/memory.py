"""A provider that records pushes instead of sending them.

Used for every kind when sending is suppressed (``PUSH_SUPPRESS_SEND``, on by
default in testing), so that the outbox, counts and signals behave exactly as
they do when sending for real; ``push.record()`` shows what it took.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..message import DeliveryResult, Notification, OutgoingPush
from .base import Provider


class MemoryProvider(Provider):
    """Accepts every push and keeps it in :attr:`sent`.

    :param kind: the kind it stands in for (``webpush``, ``fcm`` or ``apns``);
        results name it as their provider.
    """

    name: ClassVar[str] = "memory"
    #: the real providers check sizes at ``send()`` time; this one takes anything
    max_payload: ClassVar[int] = 2**31

    def __init__(self, kind: str = "memory", **options: Any) -> None:
        super().__init__(**options)
        self.kind = kind
        #: every push it was given, in order
        self.sent: list[OutgoingPush] = []

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **options: Any) -> MemoryProvider:
        return cls(**options)

    def build_payload(self, push: OutgoingPush) -> OutgoingPush:
        return push

    def payload_size(self, notification: Notification) -> int:
        return 0

    async def post(self, push: OutgoingPush, payload: Any) -> OutgoingPush:
        self.sent.append(push)
        return push

    def parse(self, push: OutgoingPush, response: Any) -> DeliveryResult:
        if isinstance(response, BaseException):
            return DeliveryResult(push.delivery_id, "failed", self.kind, error=str(response))
        return DeliveryResult(push.delivery_id, "sent", self.kind, reason="recorded")

    async def aclose(self) -> None:
        return None
