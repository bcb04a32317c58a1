"""The provider contract, after django-anymail's template method.

The base class owns the loop over a batch, concurrency, timeouts and error
wrapping; a provider supplies the pure steps (``build_payload``, ``parse``) and
the one method that touches its client library (``post``). Providers never
touch the database: they only report a :class:`DeliveryResult` per push.

Concurrency is limited per *lane* (:meth:`Provider.lane`: a Web Push service's
origin; FCM and APNs have one endpoint, so one lane) and for the whole provider.
A push service that never answers fills its own lane and nothing more: the
other services' pushes go past it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import os
import ssl
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import timezone
from typing import Any, ClassVar, Literal, TypeVar

from ..credentials import ProviderKind
from ..errors import PayloadError
from ..message import Activity, DeliveryResult, Notification, OutgoingPush
from ..validation import digits

logger = logging.getLogger(__name__)

#: seconds past a provider's own timeout before its request is abandoned
_GRACE = 1.0

_T = TypeVar("_T")

#: what :meth:`Provider.lane_state` says of a lane
LaneState = Literal["open", "full", "stalled"]


#: the share of a push's ``timeout`` in which its connection (TLS included), and an
#: access token it needs, must be made: a push whose connection was never made is
#: then told ("unreachable", it was not sent) from one whose answer never came
#: ("no_answer", it may have arrived), which the whole timeout would hide
CONNECT_SHARE = 0.5


async def within(seconds: float, request: Coroutine[Any, Any, _T]) -> _T:
    """``await request``, abandoned after ``seconds`` with ``asyncio.TimeoutError``.

    ``asyncio.timeout`` (Python 3.11) runs it in the caller's task; ``wait_for``
    would make a task of it, a cost paid once per push.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await request
    return await asyncio.wait_for(request, seconds)


#: the share of a provider's timeout that the body of an accepted push's answer may
#: take after its status line, which has said the push was taken
BODY_SHARE = 0.25


async def read_start(response: Any, limit: int, *, for_at_most: float | None = None) -> str:
    """The first ``limit`` bytes of an aiohttp ``response``'s body, as text; the
    rest is left unread, so that a service answering with an endless body costs
    no more memory than that.

    A body that breaks off (the connection closed or reset before the length its
    headers gave), or that is still coming after ``for_at_most`` seconds, is what
    came of it: the status line has said what became of the push, and the body only
    words it. Raising would make an accepted push a retry, sent twice."""
    import aiohttp

    data = bytearray()

    async def read() -> None:
        while len(data) < limit:
            chunk = await response.content.read(limit - len(data))
            if not chunk:
                break
            data.extend(chunk)

    try:
        await (read() if for_at_most is None else within(for_at_most, read()))
    except (aiohttp.ClientPayloadError, asyncio.TimeoutError):
        pass
    return bytes(data).decode("utf-8", "replace")


def _unsendable(result: DeliveryResult) -> DeliveryResult:
    """``result`` of a push that could not be built (a payload too large, an endpoint
    refused, a key that is not one): flask-push's own verdict, not the service's."""
    if result.status != "failed" or result.reason is not None:
        return result
    return dataclasses.replace(result, reason="unsendable")


def unreachable(error: BaseException, timeout: float | None = None) -> str:
    """A failure to get any answer from a push service, in the words an operator
    reads in a timeline: what went wrong first, the client library's own words after.

    Each provider's ``parse`` gives it, with the reason ``unreachable``, for what its
    client raised before an answer came; ``timeout`` is the provider's, for a
    request abandoned without an answer.
    """
    import aiohttp

    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return "the connection was not made in time"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        waited = f" within {timeout:g} s" if timeout is not None else ""
        return f"no answer came{waited}"
    words = str(error) or type(error).__name__
    if isinstance(error, aiohttp.ClientConnectorError):
        host = error.host
        if isinstance(error, aiohttp.ClientConnectorDNSError):
            return f"the name {host} did not resolve ({error.os_error.strerror or words})"
        if isinstance(error, aiohttp.ClientConnectorCertificateError):
            return f"{host}'s TLS certificate is not trusted ({error.certificate_error})"
        if isinstance(error, aiohttp.ClientSSLError):
            return f"the TLS handshake with {host} failed ({error.os_error})"
        return f"the connection to {host}:{error.port} failed ({os_words(error.os_error)})"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "it closed the connection before answering"
    if isinstance(error, aiohttp.ClientPayloadError):
        return f"the connection broke off before its answer was read ({words})"
    if exiting(error):
        return f"this process was exiting and could not connect ({words})"
    if isinstance(error, ssl.SSLError):
        return f"the TLS connection failed ({words})"
    if isinstance(error, OSError) and (error.errno or error.strerror):
        return f"the connection failed ({os_words(error)})"
    return f"{type(error).__name__}: {words}"


def without_answer(
    push: OutgoingPush, provider: str, error: BaseException, timeout: float
) -> DeliveryResult | None:
    """What an aiohttp client's ``error`` means when no answer of the push service
    could be read: a retry, since the next try may well be answered (a dropped or
    refused connection, a DNS failure, a timeout, an answer that was not HTTP); None
    for anything else, such as a bad URL or a bug, which will not pass."""
    import aiohttp

    if isinstance(error, aiohttp.ClientResponseError):
        # aiohttp could not read the answer as HTTP (a 400 of its own, not the
        # service's): it may well read the next one. Its text would name the whole
        # endpoint, which logs and timelines never show; its parser's message may
        # run over lines.
        said = " ".join(str(error.message).split())[:200]
        return DeliveryResult(
            push.delivery_id,
            "retry",
            provider,
            error=f"its answer was not HTTP ({said})",
            reason="no_answer",
        )
    transient = (
        aiohttp.ClientConnectionError,
        aiohttp.ClientPayloadError,
        OSError,
        asyncio.TimeoutError,
        TimeoutError,
    )
    if isinstance(error, transient) or exiting(error):
        return DeliveryResult(
            push.delivery_id,
            "retry",
            provider,
            error=unreachable(error, timeout),
            reason=unanswered_reason(error),
        )
    return None


def unanswered_reason(error: BaseException) -> str:
    """``no_answer`` when the request may have reached the push service and no
    answer came back to read (a read timeout, a connection closed or broken off
    before the answer), so the push may have arrived; ``unreachable`` when no
    connection was made, so it was not sent."""
    import aiohttp

    if isinstance(error, (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError)):
        return "unreachable"
    read_stage = (
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientPayloadError,
        # an error of the connection once made (reset by the peer while the request
        # or its answer was on the way): ClientConnectorError is one before it
        aiohttp.ClientOSError,
        asyncio.TimeoutError,
        TimeoutError,
    )
    return "no_answer" if isinstance(error, read_stage) else "unreachable"


def exiting(error: BaseException) -> bool:
    """Did Python refuse a thread or an executor's work because the interpreter is
    exiting? Python 3.12.0 to 3.12.2 start no thread (a resolver's) then: such a push
    was not sent, and goes again from the next process."""
    return isinstance(error, RuntimeError) and "shutdown" in str(error)


def os_words(error: OSError) -> str:
    """The system's words for ``error``: asyncio's own text for a refused connection
    ("Connect call failed ...") names no cause, its errno does."""
    if isinstance(error, ssl.SSLError):  # its errno is OpenSSL's, not the system's
        return str(error) or type(error).__name__
    if error.errno and error.errno > 0:
        return os.strerror(error.errno)
    return error.strerror or str(error) or type(error).__name__


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if digits(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _Lane:
    """The slots of one lane, and when it last moved."""

    __slots__ = ("slots", "sending", "waiting", "moved_at")

    def __init__(self, limit: int) -> None:
        self.slots = asyncio.Semaphore(limit)
        #: pushes holding a slot (on the network), and pushes waiting for one
        self.sending = 0
        self.waiting = 0
        #: time.monotonic() of the last answer, or of the first push after an idle spell
        self.moved_at = 0.0


class _Gates:
    """A semaphore per lane, then one for the whole provider.

    A push takes its lane's slot first: while it waits there it holds none of the
    provider's slots, so a lane that does not move delays only its own pushes.
    """

    def __init__(self, total: int, per_lane: int) -> None:
        self.per_lane = per_lane
        self.total = asyncio.Semaphore(total)
        self.lanes: dict[str, _Lane] = {}

    async def enter(self, key: str) -> _Lane:
        """Wait for a slot in lane ``key``, then for one of the provider's."""
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = _Lane(self.per_lane)
        lane.waiting += 1
        try:
            await lane.slots.acquire()
        finally:
            lane.waiting -= 1
        try:
            await self.total.acquire()
        except BaseException:
            lane.slots.release()
            self._forget(key, lane)
            raise
        if lane.sending == 0:
            lane.moved_at = time.monotonic()
        lane.sending += 1
        return lane

    def leave(self, key: str, lane: _Lane) -> None:
        lane.sending -= 1
        lane.moved_at = time.monotonic()
        self.total.release()
        lane.slots.release()
        self._forget(key, lane)

    def _forget(self, key: str, lane: _Lane) -> None:
        # Idle lanes go, so that endpoints seen once do not pile up.
        if lane.sending == 0 and lane.waiting == 0:
            self.lanes.pop(key, None)


class Provider(ABC):
    """Delivers pushes of one platform.

    Instances live in one asyncio event loop (the worker's). ``send_one`` and
    ``send_batch`` keep up to ``concurrency`` requests in flight on the
    provider's pooled client, at most ``lane_concurrency`` of them in one lane
    (see :meth:`lane`), across everything they are sending at once; ``aclose``
    releases the client.
    """

    #: the kind, as in :func:`flask_push.providers.kinds`
    name: ClassVar[str]
    #: what the registry knows of it (settings, targets, tokens); ``None`` for a
    #: provider that stands in for others (:class:`~.memory.MemoryProvider`)
    spec: ClassVar[ProviderKind | None] = None
    #: the largest payload the platform takes, in bytes on the wire
    max_payload: ClassVar[int]
    #: what :attr:`max_payload` counts, as a sentence names it ("4,096 bytes of
    #: payload"): a ``too_large`` outcome says it
    payload_counted: ClassVar[str] = "payload"
    #: whether the device downloads a notification's ``image`` itself (FCM, APNs),
    #: so that a path means nothing to it without :attr:`site_url`
    fetches_images: ClassVar[bool] = False
    #: ``PUSH_SITE_URL``, for the providers that take it: a path resolves against it
    site_url: str | None = None
    #: whether :meth:`check` has warned of an image path it cannot resolve
    _told_image_path: bool = False

    #: seconds a full lane may go without an answer before :meth:`lane_state`
    #: calls it stalled (its push service is not answering)
    stall_after: float = 2.0
    #: when a list (the dispatcher sets one when metrics are on), each push's
    #: round trip to its push service is appended, in seconds, for the dispatcher
    #: to take in batches; None costs nothing per push
    round_trips: list[float] | None = None
    #: the app whose provider this is, when it was stored for one (``POST
    #: /providers``) rather than configured in ``app.config``: what :meth:`setting`
    #: names, so that a failure's hint points at the settings that were used
    stored_for: str | None = None

    def setting(self, config_key: str) -> str:
        """How a hint names one of the provider's settings: its ``app.config`` key
        (``PUSH_APNS_KEY``), or, for a provider stored for an app, its field there
        (``settings.key of the apns provider stored for app 'com.example.beta'``)."""
        if self.stored_for is not None and self.spec is not None:
            for setting in self.spec.settings:
                if setting.config_key == config_key:
                    return (
                        f"settings.{setting.name} of the {self.name} provider stored for "
                        f"app {self.stored_for!r}"
                    )
        return config_key

    def __init__(
        self,
        *,
        concurrency: int = 100,
        timeout: float = 10.0,
        lane_concurrency: int | None = None,
    ) -> None:
        self.concurrency = concurrency
        #: requests in flight in one lane; the whole ``concurrency`` by default
        self.lane_concurrency = min(lane_concurrency or concurrency, concurrency)
        self.timeout = timeout
        self._gates: _Gates | None = None

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Mapping[str, Any], **options: Any) -> Provider:
        """Build from settings checked by :mod:`flask_push.credentials` (no I/O)."""

    @abstractmethod
    def build_payload(self, push: OutgoingPush) -> Any:
        """The platform's request for ``push``: pure, no I/O."""

    def preview(self, push: OutgoingPush) -> dict[str, Any]:
        """What would go out for ``push``, as JSON-ready data (the operator console's
        test send shows it): made by :meth:`build_payload`, so the preview and the
        send share one mapping. Providers say it in their platform's words; this
        default shows the built request as text.

        .. versionadded:: 0.2
        """
        return {"request": repr(self.build_payload(push))}

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

    def activity_payload_size(self, notification: Notification, activity: Activity) -> int:
        """Bytes on the wire for ``notification`` showing ``activity`` (``push.activity``),
        at its largest over the tokens it may go to. Providers that carry the activity's
        state override it; by default it is :meth:`payload_size`.

        .. versionadded:: 0.2
        """
        return self.payload_size(notification)

    def check(self, notification: Notification, activity: Activity | None = None) -> None:
        """Refuse a notification the platform would refuse, before anything is queued.

        :param activity: the live activity state it shows, if any: counted too.
        :raises PayloadError: when it is too large; never truncated.

        .. versionchanged:: 0.2
            The ``activity`` parameter.
        """
        if activity is None:
            size = self.payload_size(notification)
            # what the sender can shorten: an activity's state rides in the payload too
            what = "the body"
        else:
            size = self.activity_payload_size(notification, activity)
            what = "the body or the activity's state" + (
                " and attributes" if activity.attributes else ""
            )
        if size > self.max_payload:
            raise PayloadError(
                f"The {self.name} payload would be {size} bytes; the limit is "
                f"{self.max_payload}. Shorten {what}, or move data to your server.",
                provider=self.name,
            )
        image = notification.image
        if (
            self.fetches_images
            and self.site_url is None
            and image is not None
            and image.startswith("/")
            and not self._told_image_path
        ):
            # Sent as it is (a browser resolves it against its page, and an app's own
            # code may too), but the phone's system cannot: said once, not per send.
            self._told_image_path = True
            logger.warning(
                "flask-push: the image %r is a path, and phones download a notification's "
                "image from a full URL, so %s notifications show none. Set PUSH_SITE_URL "
                "to the site's address (a path then resolves against it), or give the "
                "image as an https URL. (Said once per process.)",
                image,
                self.name,
            )

    def lane(self, push: OutgoingPush) -> str:
        """The lane ``push`` goes in: pushes of one lane share one endpoint, whose
        slowness should not hold back the others. One lane by default."""
        return self.name

    def lane_state(self, key: str) -> LaneState:
        """``open`` when a push of lane ``key`` would get a slot now, ``full`` when
        it would wait, ``stalled`` when it would wait behind pushes that have had
        no answer for :attr:`stall_after` seconds."""
        lane = self._gates.lanes.get(key) if self._gates is not None else None
        if lane is None or not lane.slots.locked():
            return "open"
        if lane.sending and time.monotonic() - lane.moved_at > self.stall_after:
            return "stalled"
        return "full"

    async def send_one(
        self, push: OutgoingPush, started: Callable[[], object] | None = None
    ) -> DeliveryResult:
        """Send ``push`` once its lane and the provider have a free slot.

        :param started: called when the push has its slots, just before it is
            built and sent: until then, cancelling the call sends nothing. It may
            raise :class:`asyncio.CancelledError` to send nothing after all (the
            dispatcher does for a push whose lease ran out while it waited).
        """
        if self._gates is None:
            self._gates = _Gates(self.concurrency, self.lane_concurrency)
        gates, key = self._gates, self.lane(push)
        began = 0.0
        lane = await gates.enter(key)
        try:
            if started is not None:
                started()
            try:
                payload = self.build_payload(push)
            except Exception as err:  # noqa: BLE001 - parse() decides what it means
                return _unsendable(self.parse(push, err))
            began = time.monotonic()
            response = await within(self.timeout, self.post(push, payload))
        except asyncio.TimeoutError as err:
            if began and self.round_trips is not None:
                # the time it waited: a push service that stops answering is slow
                self.round_trips.append(time.monotonic() - began)
            return DeliveryResult(
                push.delivery_id,
                "retry",
                self.name,
                error=unreachable(err, self.timeout),
                reason=unanswered_reason(err),
            )
        except Exception as err:  # noqa: BLE001 - parse() decides what it means
            response = err
        finally:
            gates.leave(key, lane)
        trips = self.round_trips
        # An answer came (an error the client raised is one too); a payload that
        # could not be built made no round trip.
        if trips is not None and began:
            trips.append(time.monotonic() - began)
        return self.parse(push, response)

    async def send_batch(self, pushes: Sequence[OutgoingPush]) -> list[DeliveryResult]:
        """Send every push; one result per push, in order.

        Batches sent at once share the provider's slots, so that overlapping
        batches keep the pool full without overfilling it. The dispatcher sends
        with :meth:`send_one`, to record each outcome as soon as it is known.
        """
        return list(await asyncio.gather(*(self.send_one(push) for push in pushes)))
