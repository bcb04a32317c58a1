"""The provider contract, after django-anymail's template method.

The base class owns the loop over a batch, concurrency, timeouts and error
wrapping; a provider supplies the pure steps (``build_payload``, ``parse``) and
the one method that touches its client library (``post``). Providers never
touch the database: they only report a :class:`DeliveryResult` per push.
"""

from __future__ import annotations

import asyncio
import email.utils
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Mapping, Sequence
from datetime import timezone
from typing import Any, ClassVar, TypeVar

from ..errors import PayloadError
from ..message import DeliveryResult, Notification, OutgoingPush

#: seconds past a provider's own timeout before its request is abandoned
_GRACE = 1.0

_T = TypeVar("_T")


async def _within(seconds: float, request: Coroutine[Any, Any, _T]) -> _T:
    """``await request``, abandoned after ``seconds`` with ``asyncio.TimeoutError``.

    ``asyncio.timeout`` (Python 3.11) runs it in the caller's task; ``wait_for``
    would make a task of it, a cost paid once per push.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await request
    return await asyncio.wait_for(request, seconds)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Provider(ABC):
    """Delivers pushes of one platform.

    Instances live in one asyncio event loop (the worker's); ``send_batch``
    keeps up to ``concurrency`` requests in flight on the provider's pooled
    client, across all the batches it is sending at once, and ``aclose``
    releases it.
    """

    #: the kind, as in :data:`flask_push.credentials.KINDS`
    name: ClassVar[str]
    #: the largest payload the platform takes, in bytes on the wire
    max_payload: ClassVar[int]

    def __init__(self, *, concurrency: int = 100, timeout: float = 10.0) -> None:
        self.concurrency = concurrency
        self.timeout = timeout
        self._gate: asyncio.Semaphore | None = None

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Mapping[str, Any], **options: Any) -> Provider:
        """Build from settings checked by :mod:`flask_push.credentials` (no I/O)."""

    @abstractmethod
    def build_payload(self, push: OutgoingPush) -> Any:
        """The platform's request for ``push``: pure, no I/O."""

    @abstractmethod
    def payload_size(self, notification: Notification) -> int:
        """Bytes on the wire for ``notification`` at its largest (with a click token)."""

    @abstractmethod
    async def post(self, push: OutgoingPush, payload: Any) -> Any:
        """Send one payload with the client library; return its response."""

    @abstractmethod
    def parse(self, push: OutgoingPush, response: Any) -> DeliveryResult:
        """Turn a response, or the exception ``post`` raised, into a result."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release pooled connections (call it in the loop that used them)."""

    def check(self, notification: Notification) -> None:
        """Refuse a notification the platform would refuse, before anything is queued.

        :raises PayloadError: when it is too large; never truncated.
        """
        size = self.payload_size(notification)
        if size > self.max_payload:
            raise PayloadError(
                f"The {self.name} payload would be {size} bytes; the limit is "
                f"{self.max_payload}. Shorten the body or move data to your server.",
                provider=self.name,
            )

    async def send_batch(self, pushes: Sequence[OutgoingPush]) -> list[DeliveryResult]:
        """Send every push; one result per push, in order.

        Batches sent at once share the provider's ``concurrency``: one gate for
        all, so that overlapping batches keep the pool full without overfilling it.
        """
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.concurrency)
        gate = self._gate

        async def one(push: OutgoingPush) -> DeliveryResult:
            async with gate:
                try:
                    payload = self.build_payload(push)
                    response = await _within(self.timeout, self.post(push, payload))
                except asyncio.TimeoutError:
                    return DeliveryResult(
                        push.delivery_id,
                        "retry",
                        self.name,
                        error=f"no answer within {self.timeout:g} s",
                    )
                except Exception as err:  # noqa: BLE001 - parse() decides what it means
                    response = err
                return self.parse(push, response)

        return list(await asyncio.gather(*(one(push) for push in pushes)))
