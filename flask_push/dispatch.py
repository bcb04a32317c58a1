"""Delivery: claim due outbox rows, send them through the providers, record outcomes.

A :class:`Dispatcher` belongs to one app and is used by one thread at a time
(a queue's worker, or the caller of an inline ``send()``), beside its database
thread and, now and then, a thread writing the inbox items of scheduled messages.
It owns an asyncio event loop that lives as long as it does, so that the
providers' connection pools (aiohttp, HTTP/2 to APNs) stay warm between rounds.

Every state lives in the database. A claim sets a short lease (``lease_until``)
on queued rows, renewed while they are in hand; a worker that dies leaves them
queued, and another claims them once the lease has run out. A worker claims
only what it is about to send (what its providers may have on the network, plus
a batch), and writes each outcome within :data:`FLUSH_EVERY` seconds of its
answer, so what a killed worker leaves to be sent twice is what it had on the
network. When the database cannot be reached, outcomes are kept in memory and
written once it is back.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import os
import queue
import random
import socket
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Container, Coroutine, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property, partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar, cast

import sqlalchemy as sa
from flask import Flask
from itsdangerous import BadSignature, Signer, URLSafeSerializer
from itsdangerous.encoding import base64_encode
from sqlalchemy.orm import Session

from . import app_providers, outcomes, policy, scheduled_inbox, signals, tracing
from .activities import activity_from_json, overtaken
from .config import MAX_TTL, PushSettings
from .database import answers, first_line, missing_tables, tables_missing_message, unreachable
from .db_clock import DatabaseClock
from .message import (
    DeliveryResult,
    DeviceTarget,
    Notification,
    OutgoingPush,
    WebPushTarget,
    one_line,
)
from .models import ACTIVE, DEAD, Models
from .providers import (
    Provider,
    not_configured_error,
    provider_class,
    service_name,
    settings_to_set,
)
from .providers import kind as registered
from .providers.memory import MemoryProvider
from .schemas.fields import MAX_TEXT
from .sending import notification_from_json

if TYPE_CHECKING:  # prometheus_client is an optional dependency
    from .metrics import Metrics

_T = TypeVar("_T")

logger = logging.getLogger("flask_push")

#: sends of one delivery before it is ``failed``
DEFAULT_MAX_ATTEMPTS = 8
#: the first retry waits about this long, doubling each time up to RETRY_CAP
RETRY_BASE = 10.0
RETRY_CAP = 3600.0
_CLICK_SALT = "flask-push.click"
#: outcomes are written once this many wait, or once the oldest has waited
#: FLUSH_EVERY seconds: a slow push never holds back the others' outcomes
FLUSH_SIZE = 100
FLUSH_EVERY = 0.1
#: a write that found the database unreachable is tried again after this many
#: seconds, doubling up to DB_RETRY_CAP
DB_RETRY_FIRST = 0.1
DB_RETRY_CAP = 2.0
#: seconds a dispatcher keeps outcomes it cannot write before giving up on them
OUTAGE_PATIENCE = 300.0
#: seconds between two reads of the providers stored by /providers: a change
#: reaches delivery within about this long
STORED_REFRESH = 2.0
#: how often a round looks at its pushes when nothing wakes it
_TICK = 0.05
#: seconds between two looks for pushes stuck behind a stalled push service
_SHED_EVERY = 0.25
#: seconds between two looks for cancelled messages among the pushes waiting for a slot
_CANCEL_CHECK_EVERY = 0.5
#: seconds between two looks for scheduled messages' inbox items that came due
_INBOX_CHECK_EVERY = 1.0
#: seconds before a round that found nothing due looks again while it still has pushes
_RECHECK = 1.0
#: messages whose traceparent a dispatcher remembers before it starts afresh
_TRACE_CACHE = 10_000
#: Run before each claim on PostgreSQL, for the rest of the claim's transaction.
#: The planner costs the claim from the table's statistics, and those a fan-out just
#: wrote say almost nothing is queued: then it reads and sorts every queued delivery
#: to pick the oldest hundred (7.5 ms a claim at 20,000 queued, 40 ms at 100,000, so
#: a fan-out's claims cost the square of its size) instead of walking
#: ``ix_push_deliveries_claim`` in order and stopping at the limit (about 1 ms at
#: either size). A sort is never the better plan for a claim.
_CLAIM_IN_INDEX_ORDER = sa.text("SET LOCAL enable_sort = off")


class _ClickSigner(Signer):
    """itsdangerous' Signer, its key derived once instead of once per token."""

    @cached_property
    def _own_key(self) -> bytes:
        return super().derive_key()

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        return self._own_key if secret_key is None else super().derive_key(secret_key)


class _ClickSerializer(URLSafeSerializer):
    """itsdangerous' URL-safe serializer for a token per push of a fan-out: without
    its zlib step (a click token's payload is a few dozen bytes that zlib never
    shortens, and trying costs more than the rest of the token; ``loads`` reads
    tokens made either way), and with one signer per salt, not one per token."""

    default_signer = _ClickSigner

    def __init__(self, secret_key: str | bytes, salt: str) -> None:
        super().__init__(secret_key, salt=salt)
        self._signers: dict[str | bytes | None, Signer] = {}

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        signer = self._signers.get(salt)
        if signer is None:
            signer = self._signers[salt] = super().make_signer(salt)
        return signer

    def dump_payload(self, obj: Any) -> bytes:
        # the JSON itsdangerous writes (compact, not ASCII-escaped), from one encoder
        # instead of a json.dumps() that builds an encoder per call
        return base64_encode(_COMPACT_JSON.encode(obj).encode("utf-8"))


_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def click_serializer(secret_key: str | bytes) -> URLSafeSerializer:
    """Signs the click tokens of Web Push payloads (``POST /messages/<id>/clicks``)."""
    return _ClickSerializer(secret_key, salt=_CLICK_SALT)


def read_click_token(secret_key: str | bytes, token: str) -> tuple[int, str] | None:
    """``(delivery id, message id)`` of a valid click token, or None for a forged one."""
    try:
        value = click_serializer(secret_key).loads(token)
    except BadSignature:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("d"), int):
        return None
    message_id = value.get("m")
    return (value["d"], message_id) if isinstance(message_id, str) else None


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next try: exponential with jitter, never sooner than
    the service's ``Retry-After``."""
    ceiling = min(RETRY_CAP, RETRY_BASE * float(1 << min(max(attempts - 1, 0), 30)))
    # "equal jitter": at least half the ceiling, so retries do spread but still back off
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        # a service may ask for any wait: none is longer than a push may live (and a
        # date as far off as some ask for cannot even be written)
        delay = max(delay, min(float(retry_after), float(MAX_TTL)))
    return delay


@dataclass(eq=False)
class _Held:
    """A claimed delivery on its way: waiting for a slot, or on the network."""

    id: int
    push: OutgoingPush
    provider: Provider
    lane: str
    #: time.monotonic() when the claim or renewal that leased it last was asked
    #: for: its lease runs until a lease after that at the earliest
    leased_at: float = 0.0
    task: asyncio.Task[DeliveryResult] | None = None
    started: bool = False


@dataclass
class _Claim:
    """One claim, loaded: the pushes to send, and the outcomes already decided."""

    claimed: int
    decided: list[dict[str, Any]]
    #: each with the provider that sends it (app.config's, or one stored for its app)
    pushes: list[tuple[Provider, OutgoingPush]]
    #: delivery id -> attempts so far, this one included
    attempts: dict[int, int]
    #: delivery id -> its timeline as claimed (outcomes append to it)
    events: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    #: held for their users' quiet hours, which began before a worker reached them
    #: (:attr:`_Writes.quiet`)
    quiet: list[dict[str, Any]] = field(default_factory=list)
    #: rows the round still held that the claim took again, as their lease had run
    #: out: renewed, and not sent a second time (not in :attr:`claimed`)
    renewed: list[int] = field(default_factory=list)


@dataclass
class _Writes:
    """What one database write records."""

    decided: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[OutgoingPush, DeliveryResult]] = field(default_factory=list)
    #: never sent: handed back at once (``b_id``, and ``b_kind``: its provider's name)
    released: list[dict[str, Any]] = field(default_factory=list)
    #: never sent, waiting behind a stalled push service: handed back for later
    deferred: list[dict[str, Any]] = field(default_factory=list)
    #: never sent, as their users' quiet hours began before a worker reached them:
    #: handed back due at the window's end (``b_due``), with ``b_events`` to add
    quiet: list[dict[str, Any]] = field(default_factory=list)
    #: never sent, as their lease may have run out while they waited (ids): only
    #: the attempt their claim counted is taken back, and their lease, which may be
    #: another worker's by now, is left alone
    lapsed: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.decided) + len(self.results) + self.handed_back

    @property
    def handed_back(self) -> int:
        """How many claims it hands back unsent."""
        return len(self.released) + len(self.deferred) + len(self.quiet) + len(self.lapsed)

    def ids(self) -> list[int]:
        return [
            *(row["b_id"] for row in self.decided),
            *(int(push.delivery_id) for push, _ in self.results),
            *(row["b_id"] for row in self.released),
            *(row["b_id"] for row in self.deferred),
            *(row["b_id"] for row in self.quiet),
            *self.lapsed,
        ]

    def extend(self, other: _Writes) -> None:
        self.decided.extend(other.decided)
        self.results.extend(other.results)
        self.released.extend(other.released)
        self.deferred.extend(other.deferred)
        self.quiet.extend(other.quiet)
        self.lapsed.extend(other.lapsed)


class _Round:
    """The state of one :meth:`Dispatcher.run_until_idle`."""

    def __init__(self) -> None:
        #: claimed deliveries whose outcome is not written yet, by id
        self.held: dict[int, _Held | None] = {}
        #: of those without a :class:`_Held` (decided, or held for quiet hours at
        #: their claim), when the claim or renewal that leased them was asked for
        self.leased_at: dict[int, float] = {}
        #: those of them not on the network yet (cancelling them sends nothing)
        self.waiting: dict[int, _Held] = {}
        #: sends not finished yet, on the network or waiting
        self.unfinished = 0
        self.attempts: dict[int, int] = {}
        #: the timelines of the deliveries in hand, as claimed
        self.events: dict[int, list[dict[str, Any]]] = {}
        self.pending = _Writes()
        #: time.monotonic() when the oldest pending outcome came
        self.pending_since = 0.0
        self.claimed = 0
        #: time.monotonic() when a claim last found fewer rows due than it asked for
        self.exhausted_at: float | None = None
        self.stopping = False
        self.gave_up = False
        #: time.monotonic() when this round found the database unreachable, if it is
        self.outage: float | None = None
        self.retry_at = 0.0
        self.retry_delay = DB_RETRY_FIRST
        self.shed_at = 0.0
        #: whether a push whose lease ran out while it waited was said (once a round)
        self.said_lapsed = False
        #: (provider id, lane) of the lanes found stalled, to say so once
        self.stalled_lanes: set[tuple[int, str]] = set()
        #: time.monotonic() when the pushes waiting for a slot are next checked for a cancel
        self.cancel_check_at = 0.0
        self.wake = asyncio.Event()

    def leased(self, ids: Iterable[int], at: float) -> None:
        """The lease of ``ids`` was renewed by a statement asked for at ``at``
        (time.monotonic()): those still in hand count their lease from then."""
        for id in ids:
            held = self.held.get(id)
            if held is not None:
                held.leased_at = at
            elif id in self.held:
                self.leased_at[id] = at

    def lease_began(self, id: int) -> float | None:
        """When the lease of ``id`` in hand was last asked for (time.monotonic())."""
        held = self.held.get(id)
        return held.leased_at if held is not None else self.leased_at.get(id)

    def add_pending(self, writes: _Writes) -> None:
        self._pending_now()
        self.pending.extend(writes)
        self._wake_to_write()

    def add_result(self, push: OutgoingPush, result: DeliveryResult) -> None:
        """One push's outcome (once per push: no :class:`_Writes` made for it)."""
        self._pending_now()
        self.pending.results.append((push, result))
        self._wake_to_write()

    def _pending_now(self) -> None:
        if not len(self.pending):
            self.pending_since = time.monotonic()

    def _wake_to_write(self) -> None:
        if len(self.pending) >= FLUSH_SIZE or not self.unfinished:
            self.wake.set()

    def take_pending(self) -> _Writes:
        writes, self.pending = self.pending, _Writes()
        return writes

    @property
    def done(self) -> bool:
        if self.held or len(self.pending):
            return False
        # A claim found nothing more due a moment ago (or this round claims once).
        found_all = (
            self.exhausted_at is not None and time.monotonic() - self.exhausted_at < _RECHECK
        )
        return found_all or self.stopping or self.gave_up or self.outage is not None

    async def sleep(self) -> None:
        try:
            await asyncio.wait_for(self.wake.wait(), _TICK)
        except asyncio.TimeoutError:
            pass
        self.wake.clear()


def _never() -> bool:
    return False


@dataclass(frozen=True)
class _HandBacks:
    """The ids of the statements a write's hand-backs make after its outcomes: an
    executemany each, in id order (the deferred, the quiet), and an ``id IN (...)``
    each (the released, the lapsed)."""

    executemany: Sequence[Sequence[int]] = ()
    in_lists: Sequence[Sequence[int]] = ()


def _delivery_id(row: Mapping[str, Any]) -> int:
    """The delivery a statement's parameters (``b_id``) are for: their order."""
    return int(row["b_id"])


def _one_by_one(writes: _Writes) -> list[_Writes]:
    """``writes`` as one :class:`_Writes` per delivery."""
    return [
        *(_Writes(decided=[row]) for row in writes.decided),
        *(_Writes(results=[item]) for item in writes.results),
        *(_Writes(released=[row]) for row in writes.released),
        *(_Writes(deferred=[row]) for row in writes.deferred),
        *(_Writes(quiet=[row]) for row in writes.quiet),
        *(_Writes(lapsed=[id]) for id in writes.lapsed),
    ]


def _joined(pieces: Sequence[_Writes]) -> _Writes:
    whole = _Writes()
    for piece in pieces:
        whole.extend(piece)
    return whole


def _without_their_words(one: _Writes) -> _Writes | None:
    """A push's outcome without what its push service said in words (the error
    text, the message id), which is all of it that came from outside. None for
    what holds no such words, or is not a push's outcome."""
    if not one.results:
        return None
    push, result = one.results[0]
    if result.error is None and result.service_id is None:
        return None
    error = None if result.status == "sent" else "its push service's answer could not be kept"
    return _Writes(results=[(push, replace(result, error=error, service_id=None))])


class _DatabaseThread:
    """A daemon thread that runs a dispatcher's database work, one job at a time.

    Not a ``ThreadPoolExecutor``: those refuse new work once the interpreter has
    begun to exit, which is just when the thread queue's worker finishes its last
    batches (``queues._stop_all`` at exit).
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, work: Callable[[], _T]) -> asyncio.Future[_T]:
        """``work()`` on the thread; the future is resolved in the calling loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="flask-push-db", daemon=True)
            self._thread.start()
        self._jobs.put((loop, future, work))
        return future

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._do(*job)
            # A job is a closure over its dispatcher, and so over the app: waiting
            # for the next one must not keep them (an app a test made and let go,
            # with its engine and a pooled connection).
            del job

    @staticmethod
    def _do(
        loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], work: Callable[[], Any]
    ) -> None:
        try:
            result, error = work(), None
        except BaseException as err:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, err
        try:
            loop.call_soon_threadsafe(_resolve, future, result, error)
        except RuntimeError:
            # The loop closed under it (a stop() that gave up waiting for this
            # job): nobody waits for the result, but a failure is still said.
            if error is not None:
                logger.warning(
                    "flask-push: database work failed after its dispatcher closed: %s",
                    error,
                )


def _let_go(
    loop: asyncio.AbstractEventLoop, jobs: queue.SimpleQueue[Any], made: list[Provider]
) -> None:
    """A dispatcher collected without :meth:`Dispatcher.close` (its app let go, as
    an app per test is): its database thread ends, and its providers' connections
    and its event loop are closed.

    On a thread of its own: the garbage collector runs this on whatever thread it
    found the dispatcher from, which may be running an event loop of its own (a
    browser test's Playwright), where this loop could not run."""
    jobs.put(None)

    def close() -> None:
        try:
            _wind_up(loop, made)
        except Exception as err:  # noqa: BLE001 - nobody is left to tell but the log
            logger.warning("flask-push: closing a let-go dispatcher failed: %s", err)
        finally:
            loop.close()

    if not loop.is_closed():
        threading.Thread(target=close, name="flask-push-let-go", daemon=True).start()


def _wind_up(loop: asyncio.AbstractEventLoop, providers: Iterable[Provider]) -> None:
    """Close ``providers``' connections and end what else runs on ``loop`` (its async
    generators, its default executor's threads), leaving the loop to be closed."""
    for provider in providers:
        loop.run_until_complete(provider.aclose())
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())


def _outside_a_running_loop(work: Callable[[], None]) -> None:
    """Do ``work``, which runs an event loop of its own: here, or, when this thread
    runs another loop (an async host's, Playwright's sync API's), in a thread of its
    own, as a loop cannot run while another runs in its thread (``push.shutdown()``
    there raised "Cannot run the event loop while another loop is running", and left
    the connections open)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        work()
        return
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as err:  # noqa: BLE001 - raised in the caller's thread
            failed.append(err)

    thread = threading.Thread(target=run, name="flask-push-close")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Dispatcher:
    """Claims and delivers due deliveries of one app.

    :param app: the app; its config and database are used.
    :param models: the push models.
    :param engine: where the push tables live.
    :param batch_size: the most deliveries one claim takes; ``PUSH_DELIVERY_BATCH``
        by default.
    :param lease: how long a claim keeps other workers off its rows; renewed every
        third of it while they are in hand. ``PUSH_DELIVERY_LEASE`` by default.
    :param max_attempts: tries before a delivery is ``failed``; also the claims it
        may have that end with no outcome written (see ``no_outcome``).
    :param outage_patience: seconds to keep outcomes that the database cannot
        take, trying again with backoff, before giving up on them.
    :param metrics: counts outcomes and round trips, when ``PUSH_METRICS`` is on.
    """

    def __init__(
        self,
        app: Flask,
        models: Models,
        engine: sa.Engine,
        settings: PushSettings,
        *,
        batch_size: int | None = None,
        lease: timedelta | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        outage_patience: float = OUTAGE_PATIENCE,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.models = models
        self.engine = engine
        self._postgresql = engine.dialect.name == "postgresql"
        #: leases and due times go by the database's clock (see db_clock)
        self.clock = DatabaseClock()
        self.settings = settings
        self.batch_size = batch_size or settings.delivery_batch
        self.lease = lease or timedelta(seconds=settings.delivery_lease)
        self.max_attempts = max_attempts
        self.outage_patience = outage_patience
        self.metrics = metrics
        #: message id -> its send span's traceparent (None: it has none), for links
        self._trace_cache: dict[str, str | None] = {}
        secret = app.config.get("SECRET_KEY")
        self._clicks = click_serializer(secret) if secret else None
        #: the pushes carry click tokens (signed with the app's ``SECRET_KEY``)
        self.signs_clicks = self._clicks is not None
        # made in an empty context: the callbacks it keeps (its self-pipe reader)
        # would hold the caller's, and with it the app context and the app, which
        # must be free to go when the app is let go (see _let_go)
        self._loop = contextvars.Context().run(asyncio.new_event_loop)
        #: claims, lease renewals and outcomes, one at a time, off the loop
        self._db = _DatabaseThread()
        #: every provider built: in use, or replaced or removed since (a stored one);
        #: all closed by close(), or by _let_go if the dispatcher is let go without it
        self._made: list[Provider] = []
        self._let_go = weakref.finalize(self, _let_go, self._loop, self._db._jobs, self._made)
        # not at exit, where the thread queue stops its workers itself (queues._stop_all)
        self._let_go.atexit = False
        self._providers: dict[str, Provider] | None = None
        #: the providers stored by /providers that deliver to installations of their
        #: app id: (kind, app id) -> (when it last changed, the provider, or why it
        #: cannot send); read on the database thread, at most every STORED_REFRESH s
        self._stored: dict[app_providers.Key, tuple[Any, Provider | str]] = {}
        self._stored_read_at = -math.inf
        #: time.monotonic() of the next look for held inbox items that came due, and
        #: the thread that writes and announces them (one at a time)
        self._inbox_check_at = -math.inf
        self._inbox_writer: threading.Thread | None = None
        #: the last failure the inbox writer logged, so that an outage is said once,
        #: and what made its last run fail, for settle_inbox
        self._inbox_failure: str | None = None
        self._inbox_error: Exception | None = None
        #: inbox items of scheduled messages written so far (by one thread at a
        #: time), for what ``flask push worker`` says it did
        self.inbox_written = 0
        self._lock = threading.Lock()
        #: time.monotonic() since when the database is unreachable, once it was said
        self._outage_since: float | None = None
        #: statements run many times a second, built once: (name, variant) -> statement
        self._statements: dict[tuple[str, bool], sa.Executable] = {}
        self.closed = False
        #: outcomes written so far, by status (``retry``: a retry scheduled;
        #: ``handed_back``: claimed, then handed back unsent, on a stop or behind a
        #: stalled push service; ``quiet_hours``: claimed in the user's quiet hours,
        #: and held to their end), for what ``flask push worker`` says it did
        self.written: Counter[str] = Counter()
        self._lock_written = threading.Lock()

    @property
    def database_unreachable(self) -> bool:
        """Whether the last look at the database found it unreachable (said once, as a
        warning, until it is back)."""
        return self._outage_since is not None

    # -- providers -----------------------------------------------------------------

    def _make_providers(self) -> dict[str, Provider]:
        """Built inside the loop, once: their pools are bound to it."""
        return {
            kind: self._make_provider(kind, settings)
            for kind, settings in self.settings.providers.items()
        }

    def _make_provider(self, kind: str, settings: Mapping[str, Any]) -> Provider:
        """A provider of ``kind`` (no I/O: its pool is made on its first send)."""
        provider: Provider
        if self.settings.suppresses_send(self.app):
            provider = MemoryProvider(kind)
        else:
            options = registered(kind).options(self.settings)
            provider = provider_class(kind).from_settings(settings, **options)
            if self.metrics is not None:
                provider.round_trips = []
        self._made.append(provider)
        return provider

    def _stored_providers(self) -> list[Provider]:
        """The stored providers in use (those that could be built)."""
        return [p for _, p in self._stored.values() if isinstance(p, Provider)]

    def _read_stored(self, session: Session) -> dict[app_providers.Key, tuple[Any, Provider | str]]:
        """The stored providers, read again when :data:`STORED_REFRESH` has passed
        (on the database thread); one whose row changed is built afresh."""
        now = time.monotonic()
        if now - self._stored_read_at < STORED_REFRESH:
            return self._stored
        self._stored_read_at = now
        versions = app_providers.stored_versions(session, self.models)
        stored: dict[app_providers.Key, tuple[Any, Provider | str]] = {}
        for key, version in versions.items():
            known = self._stored.get(key)
            if known is not None and known[0] == version:
                stored[key] = known
                continue
            settings = app_providers.stored_settings(session, self.models, key)
            if settings is None:  # deleted since
                continue
            try:
                provider = self._make_provider(
                    key[0], app_providers.delivery_settings(key[0], settings, self.app.config)
                )
                provider.stored_for = key[1]  # its hints name the stored settings
                built: Provider | str = provider
            except Exception as err:  # noqa: BLE001 - its deliveries fail with the reason
                built = one_line(str(err)) or type(err).__name__
                logger.warning(
                    "flask-push: the %s provider stored for app %r cannot send: %s",
                    key[0],
                    key[1],
                    built,
                )
            stored[key] = (version, built)
        self._stored = stored
        return stored

    @property
    def providers(self) -> dict[str, Provider]:
        if self._providers is None:

            async def build() -> dict[str, Provider]:
                return self._make_providers()

            self._providers = self._run(build())
        return self._providers

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` on the loop until it is done, as a task in a context of
        its own. What it leaves on the loop (a connection pool's keep-alive timer)
        keeps the context it was made in: the caller's holds the app context, and
        through it the app, which must be free to go when it is let go (see
        :func:`_let_go`). Nothing on the loop needs the caller's context: the
        database work runs in an app context of its own (:meth:`_on_db_thread`)."""
        task = contextvars.Context().run(self._loop.create_task, coroutine)
        return self._loop.run_until_complete(task)

    def close(self) -> None:
        """Close the providers' connections and the event loop."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            # it stops after the batch it is writing (announcements that hang are
            # left behind after a while)
            self._join_inbox(timeout=5.0)
            self._let_go.detach()  # closed here instead
            made, self._made[:] = list(self._made), []
            self._providers, self._stored = None, {}
            try:
                # the providers in use and those replaced or removed since (stored ones)
                _outside_a_running_loop(partial(_wind_up, self._loop, made))
            finally:
                # The database thread first: a job still on it (a cancelled round's
                # lease renewal) hands its result to the loop, which must be open.
                self._db.stop()
                self._loop.close()

    @property
    def window(self) -> int:
        """The most deliveries in hand and not sent yet: what the providers may have
        on the network, plus one batch about to go."""
        providers = [*self.providers.values(), *self._stored_providers()]
        most = max((provider.concurrency for provider in providers), default=0)
        return most + self.batch_size

    # -- one round -----------------------------------------------------------------

    def run_once(self, *, message_id: str | None = None) -> int:
        """Claim one batch of due deliveries (of ``message_id`` only, when given),
        send it and record the outcomes; returns how many rows were claimed."""
        with self._lock:
            self._ready()
            return self._run(self._pump(message_id, _never, once=True))

    def run_until_idle(
        self, *, message_id: str | None = None, stop: Callable[[], bool] | None = None
    ) -> int:
        """Deliver until nothing is due (or ``stop()`` says so); returns how many
        rows were claimed.

        Claims are made as slots free up, so the requests in flight never drain
        between two claims; each outcome is written within :data:`FLUSH_EVERY`
        seconds of its answer. On ``stop()`` the pushes on the network finish and
        the claimed ones not sent yet are handed back at once.
        """
        with self._lock:
            self._ready()
            return self._run(self._pump(message_id, stop or _never))

    def _ready(self) -> None:
        """Refuse a closed dispatcher; build the providers now, outside the loop
        (building runs the loop, which cannot be run from inside itself)."""
        if self.closed:
            raise RuntimeError("this dispatcher is closed")
        self.providers  # noqa: B018 - built on first access

    async def _pump(
        self, message_id: str | None, stop: Callable[[], bool], once: bool = False
    ) -> int:
        r = _Round()
        self._inbox_check_at = -math.inf  # a round's first turn looks at once
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(r))
        try:
            while True:
                await self._turn(r, message_id, stop, once)
                if r.done:
                    return r.claimed
                await r.sleep()
        except Exception:
            await self._wind_down(r)
            raise
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    async def _turn(
        self, r: _Round, message_id: str | None, stop: Callable[[], bool], once: bool
    ) -> None:
        self._check_stop(r, stop)
        # Writing first: what it frees is claimed again in the same turn.
        if self._should_write(r):
            await self._write_pending(r)
        if message_id is None:
            self._look_for_due_inbox()
        if r.outage is not None:
            self._maybe_give_up(r)
        else:
            self._shed(r)
            await self._drop_cancelled(r)
            if self._may_claim(r):
                await self._claim_more(r, message_id, once)
                # Asked to stop while the claim was on its way: its sends have
                # not begun (they begin once this turn yields), so none goes.
                self._check_stop(r, stop)

    # -- scheduled messages' inbox items ---------------------------------------------

    def _look_for_due_inbox(self) -> None:
        """Have the inbox items of scheduled messages that came due written and
        announced, at most every :data:`_INBOX_CHECK_EVERY` seconds, on a thread of
        their own: neither a slow backplane under the announcements nor a failure
        may hold back a claim, a lease renewal or an outcome."""
        now = time.monotonic()
        writer = self._inbox_writer
        if now < self._inbox_check_at or (writer is not None and writer.is_alive()):
            return
        self._inbox_check_at = now + _INBOX_CHECK_EVERY
        writer = threading.Thread(
            target=self._write_due_inbox, name="flask-push-inbox", daemon=True
        )
        try:
            writer.start()
        except RuntimeError:  # the interpreter is exiting (or out of threads): next time
            logger.debug("flask-push: no thread for the inbox items that came due", exc_info=True)
            return
        self._inbox_writer = writer

    def settle_inbox(self, timeout: float | None = None) -> None:
        """Wait until the inbox items being written (see :meth:`run_until_idle`) are
        written and announced: what ``push.dispatch_due()`` and ``flask push worker
        --once`` promise, beside the deliveries. Raises what made the writing fail
        (it is logged too; the items stay held, for the next look)."""
        self._join_inbox(timeout)
        failure, self._inbox_error = self._inbox_error, None
        if failure is not None:
            raise failure

    def _join_inbox(self, timeout: float | None) -> None:
        writer = self._inbox_writer
        # not from the writer itself: a receiver of its announcement may dispatch
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout)

    def _write_due_inbox(self) -> None:
        """Write what came due a batch at a time, each announced once committed,
        until none is left or the dispatcher closes. A failure is kept for
        :meth:`settle_inbox` and logged once (an outage, which the claims say, only
        for debugging); the next look tries again."""
        try:
            with self.app.app_context():
                while not self.closed:
                    # not expired by the commit: the announcements read the items
                    with Session(self.engine, expire_on_commit=False) as session:
                        written, taken = scheduled_inbox.write_due(
                            session, self.models, self.clock.now(), self.settings.categories
                        )
                        session.commit()
                    self.inbox_written += len(written)
                    for item, created in written:
                        signals.send_committed(
                            signals.inbox_item_saved, self.app, item=item, created=created
                        )
                    self._inbox_error = self._inbox_failure = None
                    # (the rows taken: those dropped for a user's choices count too)
                    if taken < scheduled_inbox.WRITE_AT_ONCE:
                        return
        except Exception as err:  # noqa: BLE001 - a thread of its own: keep it, say it
            self._inbox_error = err
            said = first_line(err)
            if said == self._inbox_failure:
                return
            self._inbox_failure = said
            with self.app.app_context():
                push = self.app.extensions["push"].push
                outage = unreachable(err) and not answers(push)
                # tables not made, or not upgraded: what to run
                missing = [] if outage else missing_tables(push)
            # an outage, or no outbox at all: the claims say so already
            elsewhere = outage or self.models.Delivery.__table__.name in missing
            sentence = f". {tables_missing_message(missing)}" if missing else ""
            (logger.debug if elsewhere else logger.warning)(
                "flask-push: the inbox items of scheduled messages that came due could "
                "not be written (%s); they stay held, and are tried again about every "
                "%g s%s",
                said,
                _INBOX_CHECK_EVERY,
                sentence,
            )

    def _check_stop(self, r: _Round, stop: Callable[[], bool]) -> None:
        if not r.stopping and stop():
            r.stopping = True
            self._take_back(r, list(r.waiting.values()))

    # -- claiming and sending --------------------------------------------------------

    def _may_claim(self, r: _Round) -> bool:
        """Claim what is about to be sent: when fewer than a batch of the pushes in
        hand could go out now, and there is room for a good part of a batch."""
        if r.stopping or r.outage is not None:
            return False
        if r.exhausted_at is not None and time.monotonic() - r.exhausted_at < _RECHECK:
            return False
        # Sent pushes whose outcome waits to be written do not count: they are
        # no longer about to be sent, and a write takes them off at once.
        if r.unfinished and self.window - r.unfinished < max(1, self.batch_size // 2):
            return False
        if len(r.waiting) < self.batch_size:
            return True
        # Pushes waiting behind a full lane do not count: claiming more finds
        # pushes for the other push services, which have free slots.
        states: dict[tuple[int, str], str] = {}
        ready = 0
        for held in r.waiting.values():
            key = (id(held.provider), held.lane)
            state = states.get(key)
            if state is None:
                state = states[key] = held.provider.lane_state(held.lane)
            if state == "open":
                ready += 1
                if ready >= self.batch_size:
                    return False
        return True

    async def _claim_more(self, r: _Round, message_id: str | None, once: bool) -> None:
        limit = min(self.batch_size, self.window - r.unfinished)
        asked = time.monotonic()
        try:
            claim = await self._on_db_thread(
                self._claim_and_load, message_id, limit, frozenset(r.held)
            )
        except Exception as err:
            if not unreachable(err) or (
                # SQLite says "no such table" as it says "unable to open": tables not
                # made yet are no outage to wait out, but the round's failure (asked
                # of SQLite alone: a server that does not answer could keep the
                # question waiting as long as the claim)
                r.outage is None
                and self.engine.dialect.name == "sqlite"
                and await self._tables_missing()
            ):
                raise
            self._lost_database(r, err)
            return
        self._found_database(r, _Writes())
        if claim.renewed:
            r.leased(claim.renewed, asked)
            logger.warning(
                "flask-push: the lease of %d deliveries in hand ran out before this worker "
                "renewed it (it was held up for more than PUSH_DELIVERY_LEASE, %g s: a "
                "starved machine or a slow database); they are not sent twice from here, "
                "but another worker may have claimed them meanwhile and sent them too",
                len(claim.renewed),
                self.lease.total_seconds(),
            )
        r.claimed += claim.claimed
        if once:
            r.exhausted_at = float("inf")
        elif claim.claimed < limit:
            r.exhausted_at = time.monotonic()
        r.attempts.update(claim.attempts)
        r.events.update(claim.events)
        if claim.decided or claim.quiet:
            unheld = [row["b_id"] for row in (*claim.decided, *claim.quiet)]
            r.held.update(dict.fromkeys(unheld, None))
            r.leased_at.update(dict.fromkeys(unheld, asked))
            r.add_pending(_Writes(decided=claim.decided, quiet=claim.quiet))
        for provider, push in claim.pushes:
            self._start(r, provider, push, asked)

    def _start(self, r: _Round, provider: Provider, push: OutgoingPush, leased_at: float) -> None:
        held = _Held(int(push.delivery_id), push, provider, provider.lane(push), leased_at)
        r.held[held.id] = r.waiting[held.id] = held
        r.unfinished += 1
        task = asyncio.get_running_loop().create_task(
            provider.send_one(push, partial(self._started, r, held))
        )
        task.add_done_callback(partial(self._finished, r, held, provider.name))
        held.task = task

    def _started(self, r: _Round, held: _Held) -> None:
        """The push has its slots (called in its task, just before it is sent)."""
        r.waiting.pop(held.id, None)
        if len(r.waiting) < self.batch_size:
            r.wake.set()
        if self._lapsed(held, time.monotonic()):
            # Its lease may have run out while it waited (renewals held up longer
            # than a lease), and another worker may be sending it: not from here too.
            # Its row is left to whoever claims it next, less the attempt (a hand-back
            # would clear the other worker's lease).
            r.unfinished -= 1
            r.add_pending(_Writes(lapsed=[held.id]))
            if not r.said_lapsed:
                r.said_lapsed = True
                logger.warning(
                    "flask-push: delivery %s waited for a free slot longer than its lease "
                    "(PUSH_DELIVERY_LEASE, %g s), which was not renewed meanwhile; it is not "
                    "sent from here, as another worker may have claimed it, and goes when "
                    "claimed again (so may others of this round, said once)",
                    held.id,
                    self.lease.total_seconds(),
                )
            raise asyncio.CancelledError  # send_one sends nothing; _finished skips it
        held.started = True

    def _lapsed(self, held: _Held, now: float) -> bool:
        """Whether ``held``'s lease may have run out by ``now`` (time.monotonic()):
        a lease or more since the claim or renewal that leased it was asked for."""
        return now - held.leased_at >= self.lease.total_seconds()

    def _finished(
        self, r: _Round, held: _Held, kind: str, task: asyncio.Task[DeliveryResult]
    ) -> None:
        if task.cancelled():
            return  # taken back before it was sent: _take_back counted it
        r.unfinished -= 1
        if r.held.get(held.id) is not held:
            # A bug, should it ever be: its row was written meanwhile (the round
            # holds each row once: _claim_and_load), and this outcome has no
            # attempt to be written with. Writing it would fail the whole batch.
            logger.error(
                "flask-push: an outcome came for delivery %s, which this worker no longer "
                "holds; it is not written",
                held.id,
            )
            return
        r.waiting.pop(held.id, None)
        error = task.exception()
        if error is None:
            result = task.result()
        else:
            # A bug, not the service's answer: said, and tried again later.
            logger.error(
                "flask-push: sending delivery %s failed inside flask-push (%r); "
                "it will be tried again",
                held.id,
                error,
                exc_info=error,
            )
            result = DeliveryResult(
                held.push.delivery_id, "retry", held.provider.name, error=repr(error)
            )
        r.add_result(held.push, result)
        if isinstance(held.provider, MemoryProvider):
            try:
                with self.app.app_context():  # the loop's tasks run without one (_run)
                    signals.push_recorded.send(self.app, push=held.push, kind=kind)
            except Exception:
                logger.exception("flask-push: a receiver of push_recorded failed")

    def _take_back(self, r: _Round, helds: Iterable[_Held], *, later: bool = False) -> None:
        """Cancel the sends of ``helds`` that are not on the network yet; their
        claims are handed back with the next write (``later``: due again once the
        provider's timeout has passed), which counts those a cancel won against."""
        writes = _Writes()
        now = time.monotonic()
        for held in helds:
            if held.started or r.waiting.pop(held.id, None) is None:
                continue
            assert held.task is not None
            held.task.cancel()
            r.unfinished -= 1
            provider = held.provider
            if self._lapsed(held, now):
                # not handed back: that would clear the lease of a worker that may
                # have claimed it since (see _started)
                writes.lapsed.append(held.id)
            elif later:
                writes.deferred.append(
                    {
                        "b_id": held.id,
                        "b_kind": provider.name,
                        "b_delay": provider.timeout,
                        "b_service": service_name(provider.name),
                        "b_error": f"not sent: its push service ({held.lane}) gave no answer "
                        f"for {provider.stall_after:g} s, so it waits {provider.timeout:g} s",
                    }
                )
            else:
                writes.released.append({"b_id": held.id, "b_kind": provider.name})
        if len(writes):
            r.add_pending(writes)

    def _shed(self, r: _Round) -> None:
        """Hand back the pushes waiting behind a push service that stopped
        answering: they would hold their claims (and the window) until its
        requests time out, while the others' pushes can go now."""
        now = time.monotonic()
        if now < r.shed_at or not r.waiting:
            return
        r.shed_at = now + _SHED_EVERY
        stalled: dict[tuple[int, str], list[_Held]] = {}
        for held in r.waiting.values():
            if held.provider.lane_state(held.lane) == "stalled":
                stalled.setdefault((id(held.provider), held.lane), []).append(held)
        for key, helds in stalled.items():
            provider, lane = helds[0].provider, helds[0].lane
            # Once a round: while it stays silent, its pushes come back and go again.
            log = logger.debug if key in r.stalled_lanes else logger.warning
            r.stalled_lanes.add(key)
            log(
                "flask-push: %s has not answered for %g s; %d pushes waiting for it are "
                "put back and tried again in %g s",
                lane,
                provider.stall_after,
                len(helds),
                provider.timeout,
            )
            self._take_back(r, helds, later=True)

    async def _drop_cancelled(self, r: _Round) -> None:
        """Send none of the pushes waiting for a slot whose message an operator has
        cancelled since they were claimed (in any process): a cancel reaches the
        pushes in hand within about :data:`_CANCEL_CHECK_EVERY`, and only those on
        the network by then still go. One short query, only while pushes wait."""
        now = time.monotonic()
        if not r.waiting or now < r.cancel_check_at:
            return
        r.cancel_check_at = now + _CANCEL_CHECK_EVERY
        try:
            cancelled = await self._on_db_thread(self._cancelled, list(r.waiting))
        except Exception as err:  # noqa: BLE001 - sending goes on; a write or claim says it
            if not unreachable(err):
                logger.warning("flask-push: looking for cancelled pushes failed: %s", err)
            return
        # handed back as unsent: the cancel already wrote their status and timeline,
        # and left them to this worker to count, as the hand-back does
        self._take_back(r, [r.waiting[id] for id in cancelled if id in r.waiting])

    def _cancelled(self, ids: Sequence[int]) -> set[int]:
        d = self.models.Delivery
        with Session(self.engine) as session:
            return set(
                session.scalars(sa.select(d.id).where(d.id.in_(ids), d.status == "cancelled"))
            )

    # -- writing outcomes ----------------------------------------------------------

    def _should_write(self, r: _Round) -> bool:
        if not len(r.pending):
            return False
        now = time.monotonic()
        if r.outage is not None:
            return now >= r.retry_at
        return (
            len(r.pending) >= FLUSH_SIZE
            or not r.unfinished
            or r.stopping
            or now - r.pending_since >= FLUSH_EVERY
        )

    async def _write_pending(self, r: _Round) -> None:
        writes = r.take_pending()
        self._lapse_hand_backs(r, writes)
        if self.metrics is not None:
            self._observe_round_trips(self.metrics)
        # a push whose Live Activity token died goes again at once, as an alert: once
        # written, this round claims it too, as it would any other due push (else it
        # waits for the next round, which an inline send never makes)
        again = any(self._falls_back(push, result, r.attempts) for push, result in writes.results)
        try:
            await self._on_db_thread(self._write, writes, r.attempts, r.events)
        except Exception as err:
            if not unreachable(err) and writes.results:
                # One push service's words the database refuses must not hold back
                # the other outcomes, whose pushes would be sent again at every lease.
                logger.warning(
                    "flask-push: writing %d outcomes failed (%s); writing them one by one",
                    len(writes),
                    first_line(err),
                )
                left, failure = await self._on_db_thread(
                    self._write_each, writes, r.attempts, r.events
                )
                unwritten = set(left.ids())
                self._written(r, [id for id in writes.ids() if id not in unwritten])
                if failure is None:
                    self._found_database(r, writes)
                    self._claim_again(r, again)
                    return
                writes, err = left, failure
            # Outcomes are data until written: keep them (with any that came meanwhile).
            writes.extend(r.pending)
            r.pending = writes
            if not unreachable(err):
                raise err
            self._lost_database(r, err)
            return
        self._written(r, writes.ids())
        self._found_database(r, writes)
        self._claim_again(r, again)

    def _lapse_hand_backs(self, r: _Round, writes: _Writes) -> None:
        """Make lapsed the hand-backs of ``writes`` whose lease may have run out
        since they were taken back: a write held up longer than a lease (the
        database was unreachable). Another worker may have claimed them since and be
        sending them; handing them back would clear its lease, and a third worker
        would send them again. Only the attempt their claim counted is taken back."""
        now = time.monotonic()

        def lapsed(row: Mapping[str, Any]) -> bool:
            began = r.lease_began(row["b_id"])
            return began is not None and now - began >= self.lease.total_seconds()

        for name in ("released", "deferred", "quiet"):
            kept: list[dict[str, Any]] = []
            for row in getattr(writes, name):
                if lapsed(row):
                    writes.lapsed.append(row["b_id"])
                else:
                    kept.append(row)
            setattr(writes, name, kept)

    @staticmethod
    def _claim_again(r: _Round, due_now: bool) -> None:
        """Have the round claim once more when what was just written made a push due
        at once (a round that claims once claims no more)."""
        if due_now and r.exhausted_at != float("inf"):
            r.exhausted_at = None

    @staticmethod
    def _written(r: _Round, ids: Iterable[int]) -> None:
        """Forget what is in the database now."""
        for id in ids:
            r.held.pop(id, None)
            r.leased_at.pop(id, None)
            r.attempts.pop(id, None)
            r.events.pop(id, None)

    def _write_each(
        self,
        writes: _Writes,
        attempts: Mapping[int, int],
        events: Mapping[int, list[dict[str, Any]]],
    ) -> tuple[_Writes, Exception | None]:
        """Write each outcome of ``writes`` on its own. A push's outcome the database
        still refuses is written again without the push service's words (its error
        text and message id), the only part of it that came from outside. Returns
        what is left unwritten and why, when the database became unreachable or a
        piece fails even so (a bug, which the round then raises as before)."""
        pieces = _one_by_one(writes)
        for at, one in enumerate(pieces):
            try:
                self._write(one, attempts, events)
                continue
            except Exception as err:
                if unreachable(err):
                    return _joined(pieces[at:]), err
                refused = err
            plain = _without_their_words(one)
            if plain is None:
                return _joined(pieces[at:]), refused
            try:
                self._write(plain, attempts, events)
            except Exception as err:
                return _joined(pieces[at:]), err if unreachable(err) else refused
            logger.error(
                "flask-push: the push service's words for delivery %s could not be kept "
                "(%s); its outcome is kept without them",
                one.ids()[0],
                first_line(refused),
            )
        return _Writes(), None

    async def _tables_missing(self) -> bool:
        """Does the database answer, and lack flask-push's tables?"""
        push = self.app.extensions["push"].push
        return bool(await self._on_db_thread(missing_tables, push))

    def _lost_database(self, r: _Round, err: Exception) -> None:
        """The database did not answer: send nothing more, keep the outcomes, and
        try again with backoff."""
        now = time.monotonic()
        if r.outage is None:
            r.outage = now
            r.retry_delay = DB_RETRY_FIRST
            self._take_back(r, list(r.waiting.values()))
        else:
            r.retry_delay = min(r.retry_delay * 2, DB_RETRY_CAP)
        r.retry_at = now + r.retry_delay
        if self._outage_since is not None:
            return  # already said
        self._outage_since = now
        if r.held:
            pending = r.pending
            logger.warning(
                "flask-push: the database is unreachable (%s); %d outcomes are kept and will "
                "be written when it is back, and %d claimed deliveries that were not sent "
                "yet will be released then",
                first_line(err),
                len(pending.results) + len(pending.decided) + r.unfinished,
                pending.handed_back,
            )
        else:
            logger.warning(
                "flask-push: the database is unreachable (%s); no deliveries are claimed "
                "until it is back",
                first_line(err),
            )

    def _found_database(self, r: _Round, written: _Writes) -> None:
        r.outage = None
        if self._outage_since is None:
            return
        took = time.monotonic() - self._outage_since
        self._outage_since = None
        # at the outage's own level: a log (the worker's stderr) that shows the one
        # WARNING must show its end too, or the outage reads as never over
        if not len(written):
            logger.warning("flask-push: the database is back after %.1f s", took)
            return
        logger.warning(
            "flask-push: the database is back after %.1f s; %d outcomes were written and "
            "%d claimed deliveries that were not sent were released",
            took,
            len(written.results) + len(written.decided),
            written.handed_back,
        )

    def _maybe_give_up(self, r: _Round) -> None:
        """After :attr:`outage_patience` (or a lease, when asked to stop), and once
        nothing is on the network, let the outcomes go: their rows fall back to
        their lease, and whatever was sent is sent again."""
        assert r.outage is not None
        waited = time.monotonic() - r.outage
        patience = self.outage_patience
        if r.stopping:
            patience = min(patience, self.lease.total_seconds())
        if waited < patience or r.unfinished:
            return
        lost = r.take_pending()
        logger.error(
            "flask-push: gave up writing %d outcomes after %.0f s: the database is still "
            "unreachable; their deliveries stay queued and are sent again once their "
            "lease runs out, so some may arrive twice",
            len(lost.results) + len(lost.decided),
            waited,
        )
        r.held.clear()
        r.attempts.clear()
        r.events.clear()
        r.gave_up = True

    async def _heartbeat(self, r: _Round) -> None:
        """Renew the lease of what is in hand every third of a lease, so that
        only a dead worker's rows ever run out of it."""
        lease = self.lease.total_seconds()
        while True:
            await asyncio.sleep(lease / 3)
            asked = time.monotonic()
            # Not the lease of a push still waiting for its slot that ran out meanwhile
            # (this process held up past it): another worker may hold that row now,
            # and renewing it would let this one send it too. Only a claim of this
            # round's own tells it is still its own (_claim_more); else the push is
            # left at its slot (_started). One on the network is renewed all the
            # same: it goes anyway, and a lease keeps the others off it meanwhile.
            ids = [
                id
                for id, held in r.held.items()
                if held is None or held.started or not self._lapsed(held, asked)
            ]
            if not ids or r.outage is not None:
                continue
            try:
                await self._on_db_thread(self._renew, ids)
                r.leased(ids, asked)
            except Exception as err:
                if not unreachable(err):
                    logger.exception(
                        "flask-push: could not renew the lease of %d deliveries in hand", len(ids)
                    )
                    continue
                self._lost_database(r, err)
                r.wake.set()

    async def _wind_down(self, r: _Round) -> None:
        """After an unexpected error: send nothing more, let what is on the network
        finish, and write its outcomes if the database takes them."""
        self._take_back(r, list(r.waiting.values()))
        tasks = [h.task for h in r.held.values() if h is not None and h.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        writes = r.take_pending()
        if not len(writes):
            return
        try:
            await self._on_db_thread(self._write, writes, r.attempts, r.events)
            return
        except Exception as err:
            failure: Exception | None = err
        # One by one, as a round does: what the round failed on may be one of these
        # outcomes, and it must not cost the others a second send.
        while failure is not None and not unreachable(failure) and len(writes):
            writes, failure = await self._on_db_thread(
                self._write_each, writes, r.attempts, r.events
            )
            if failure is None or unreachable(failure):
                break
            bad, *rest = _one_by_one(writes)  # the first left is the one that failed
            logger.error(
                "flask-push: could not write the outcome of delivery %s after a failed "
                "round (%s); it is sent again once its lease runs out",
                bad.ids()[0],
                first_line(failure),
            )
            writes = _joined(rest)
        if failure is not None and len(writes):
            logger.error(
                "flask-push: could not write %d outcomes after a failed round (%s); their "
                "deliveries are sent again once their lease runs out",
                len(writes),
                first_line(failure),
            )

    async def _on_db_thread(self, work: Callable[..., _T], *args: Any) -> _T:
        """``work(*args)`` on the database thread, in an app context as on the
        caller's thread (signal receivers may use ``current_app``)."""

        began: list[float] = []  # when the thread took it up

        def run() -> _T:
            began.append(time.monotonic())
            with self.app.app_context():
                return work(*args)

        future = self._db.run(run)
        # A connection whose server vanished (a failover, a host gone) can leave a
        # query waiting for many minutes without an error: say so while it waits,
        # as the leases of what is in hand run out meanwhile.
        loop = asyncio.get_running_loop()
        patience = self.lease.total_seconds() / 2
        said = False
        watch: asyncio.TimerHandle

        def still_waiting() -> None:
            nonlocal watch, said
            if future.done():
                return  # answered in this very turn of the loop
            # Timed from when the thread took it up: a job queued behind the one
            # that waits is not the one to blame.
            waited = time.monotonic() - began[0] if began else 0.0
            if waited < patience:
                watch = loop.call_later(patience - waited, still_waiting)
                return
            said = True
            logger.warning(
                "flask-push: the database has not answered for %g s; the leases of the "
                "deliveries in hand run out after %g s, and another worker may then send "
                "them again",
                patience,
                self.lease.total_seconds(),
            )

        watch = loop.call_later(patience, still_waiting)
        try:
            return await future
        finally:
            watch.cancel()
            if said and not future.cancelled():
                logger.info(
                    "flask-push: the database answered after %.0f s", time.monotonic() - began[0]
                )

    # -- the database thread ---------------------------------------------------------

    def _claim_and_load(
        self, message_id: str | None, limit: int, in_hand: Container[int] = ()
    ) -> _Claim:
        """Claim and load in one transaction: a claim that fails to load is no claim.

        Rows of ``in_hand`` (the round's own, not written yet) that the claim took
        again, their lease having run out under them, are not loaded: their claim
        renewed the lease, and its attempt is taken back (:attr:`_Claim.renewed`)."""
        with Session(self.engine) as session:
            ids = self._claim(session, message_id, limit)
            again = [id for id in ids if id in in_hand]
            if again:
                self._take_back_attempts(session, again)
                ids = [id for id in ids if id not in in_hand]
            claim = self._load(session, ids) if ids else _Claim(0, [], [], {})
            claim.renewed = again
            _commit_without_waiting(session)
            return claim

    def _write(
        self,
        writes: _Writes,
        attempts: Mapping[int, int],
        events: Mapping[int, list[dict[str, Any]]],
    ) -> None:
        with ExitStack() as spans, Session(self.engine) as session:
            if tracing.ENABLED:
                self._deliver_spans(spans, session, self._outcome_counts(writes, attempts), writes)
            # the hand-backs' statements, each over rows of its own: an executemany
            # (in id order) each, and an id IN (...) each
            handing_back = _HandBacks(
                executemany=[
                    [row["b_id"] for row in rows] for rows in (writes.deferred, writes.quiet)
                ],
                in_lists=[[row["b_id"] for row in writes.released], writes.lapsed],
            )
            dead, recorded, dropped = self._record(
                session, list(writes.decided), writes.results, attempts, events, handing_back
            )
            lost_to_cancel = self._hand_back(session, writes, events)
            _commit_without_waiting(session)
        written: Counter[str] = Counter()
        for (_, status), n in recorded.items():
            written[status] += n
        # held for quiet hours: no outcome (the metrics count none), said apart
        handed_back = writes.handed_back - len(writes.quiet)
        if handed_back:
            written["handed_back"] += handed_back
        if writes.quiet:
            written["quiet_hours"] += len(writes.quiet)
        with self._lock_written:
            self.written.update(written)
        if self.metrics is not None and (recorded or lost_to_cancel):
            # what was written, not what was answered: a retry dropped as superseded
            # counts as superseded
            self.metrics.count(recorded + lost_to_cancel)
            self.metrics.refused(
                Counter(
                    result.provider
                    for _, result in writes.results
                    if result.reason == "credentials_refused"
                )
            )
        # The outcomes are kept whatever a receiver does.
        try:
            self._signal(writes.results, attempts, dead, dropped)
        except Exception:
            logger.exception("flask-push: a receiver of a delivery signal failed")

    def _lock_in_order(
        self,
        session: Session,
        statements: Sequence[Sequence[int]],
        unordered: Sequence[Sequence[int]] = (),
    ) -> None:
        """On PostgreSQL, lock the rows of a write whose ``statements`` (the ids each
        updates) are several, in the order of their ids. Each executemany updates its
        rows in id order, as an operator's cancel locks them (``control._chunks``);
        but one statement after another (the sent and failed, then the retries, then
        the hand-backs) does not, and a worker's write and a cancel deadlocked (the
        cancel's request got a 500); nor need one ``id IN (...)`` of ``unordered``
        (a bitmap scan takes its rows in the table's order). A write of one ordered
        statement, the common one (a batch of pushes sent), needs no lock of its own.
        SQLite has one writer at a time."""
        several = [ids for ids in statements if ids]
        if self.engine.dialect.name != "postgresql" or (
            len(several) < 2 and all(len(ids) < 2 for ids in unordered)
        ):
            return
        d = self.models.Delivery
        ids = sorted(id for each in several for id in each)
        session.execute(sa.select(d.id).where(d.id.in_(ids)).order_by(d.id).with_for_update())

    def _outcome_counts(
        self, writes: _Writes, attempts: Mapping[int, int]
    ) -> Counter[tuple[str, str]]:
        """What a write's answers say, by provider and outcome, for its tracing
        spans (opened before the write; the metrics count what it wrote)."""
        counts: Counter[tuple[str, str]] = Counter(
            (row.get("b_kind") or "unknown", row["b_status"]) for row in writes.decided
        )
        for push, result in writes.results:
            status: str = result.status
            if status == "retry" and self._gives_up(attempts[int(push.delivery_id)]):
                status = "failed"
            counts[result.provider, status] += 1
        return counts

    def _deliver_spans(
        self,
        spans: ExitStack,
        session: Session,
        counts: Mapping[tuple[str, str], int],
        writes: _Writes,
    ) -> None:
        """Open one ``flask_push.deliver`` span per provider of this write (closed
        once it is committed), linked to the send spans of its messages."""
        by_provider: dict[str, Counter[str]] = {}
        for (provider, outcome), n in counts.items():
            by_provider.setdefault(provider, Counter())[outcome] += n
        for provider, tally in by_provider.items():
            span = spans.enter_context(tracing.deliver_span(provider, tally))
            if tracing.recording(span):
                assert span is not None
                ids = {
                    push.message_id
                    for push, result in writes.results
                    if result.provider == provider
                }
                tracing.link(span, self._traceparents(session, ids))

    def _traceparents(self, session: Session, message_ids: Iterable[str]) -> list[str]:
        """The send spans' traceparents of these messages, read once per message."""
        cache = self._trace_cache
        missing = [id for id in message_ids if id not in cache]
        if missing:
            if len(cache) > _TRACE_CACHE:
                cache.clear()
            m = self.models.Message.__table__
            found: dict[str, str | None] = dict(
                session.execute(sa.select(m.c.id, m.c.traceparent).where(m.c.id.in_(missing))).all()
            )
            cache.update({id: found.get(id) for id in missing})
        return [value for id in message_ids if (value := cache.get(id))]

    def _observe_round_trips(self, metrics: Metrics) -> None:
        """Hand the providers' round trips to the metrics, a batch at a time (on the
        loop's thread, where the providers append them)."""
        for provider in [*self.providers.values(), *self._stored_providers()]:
            trips = provider.round_trips
            if trips:
                provider.round_trips = []
                metrics.observe(provider.name, trips)

    def _gives_up(self, tries: int) -> bool:
        """Whether a delivery tried ``tries`` times is failed rather than retried."""
        return tries >= self.max_attempts

    def _falls_back(
        self, push: OutgoingPush, result: DeliveryResult, attempts: Mapping[int, int]
    ) -> bool:
        """Whether a push APNs answered "gone" for goes again as an ordinary alert to
        its device: it went to a Live Activity's own token or the push-to-start token,
        which died alone, and it has tries left (``attempts``: tries by delivery id,
        looked up last: every outcome of a write is asked)."""
        return (
            result.status == "gone"
            and isinstance(push.target, DeviceTarget)
            and push.target.kind != "device"
            and not self._gives_up(attempts[int(push.delivery_id)])
        )

    def _never_finished(self, claims: int) -> bool:
        """Whether a delivery claimed ``claims`` times, this claim included, has
        been claimed more often than it may be tried: a retry gives up at
        ``max_attempts``, and an unsent claim handed back is not counted, so only
        claims that ended with no outcome at all take it past that."""
        return claims > self.max_attempts

    def _renew(self, ids: Sequence[int]) -> None:
        d = self.models.Delivery
        with Session(self.engine) as session:
            session.execute(
                sa.update(d)
                # lease_until is cleared with each outcome: a row written meanwhile stays so
                .where(d.id.in_(ids), d.status == "queued", d.lease_until.is_not(None))
                .values(lease_until=self.clock.now() + self.lease),
                execution_options={"synchronize_session": False},
            )
            _commit_without_waiting(session)

    def _hand_back(
        self, session: Session, writes: _Writes, events: Mapping[int, list[dict[str, Any]]]
    ) -> Counter[tuple[str, str]]:
        """Claims that were never sent: their attempt is taken back, and another
        worker (or this one) may claim them at once, once ``b_delay`` has passed, or
        (held for quiet hours) at the window's end.

        Returns, by provider, those a cancel won against: it wrote them ``cancelled``
        and left them to this worker, which held them, to count
        (:func:`flask_push.control.cancel`), whether this worker found the cancel
        or handed them back for another reason (a stalled push service, a stop)."""
        d = self.models.Delivery.__table__
        now = self.clock.now()
        released, deferred = writes.released, writes.deferred
        if released:
            session.execute(
                sa.update(d)
                .where(d.c.id.in_([row["b_id"] for row in released]), d.c.status == "queued")
                .values(lease_until=None, attempts=d.c.attempts - 1, updated_at=now)
            )

        def due_later(reason: str, rows: list[dict[str, Any]], **values: Any) -> None:
            """Hand ``rows`` back due at their ``b_due``, with ``reason``, their
            ``b_events`` joining the timeline in the same UPDATE."""
            session.execute(
                sa.update(d)
                .where(d.c.id == sa.bindparam("b_id"), d.c.status == "queued")
                .values(
                    lease_until=None,
                    attempts=d.c.attempts - 1,
                    due_at=sa.bindparam("b_due"),
                    updated_at=now,
                    reason=reason,
                    events=sa.bindparam("b_events", type_=d.c.events.type),
                    **values,
                ),
                [
                    {**row, "b_events": [*events.get(row["b_id"], ()), *row["b_events"]]}
                    for row in sorted(rows, key=_delivery_id)
                ],
            )

        if deferred:
            due_later(
                "stalled",
                [
                    {
                        "b_id": row["b_id"],
                        "b_due": now + timedelta(seconds=row["b_delay"]),
                        "b_error": _clip(row["b_error"]),
                        "b_events": [
                            _deferred(now, timedelta(seconds=row["b_delay"]), row["b_service"])
                        ],
                    }
                    for row in deferred
                ],
                error=sa.bindparam("b_error"),
            )
        if writes.quiet:
            # a retry's error stays: what its service answered last
            due_later(
                "quiet_hours",
                [
                    {"b_id": row["b_id"], "b_due": row["b_due"], "b_events": row["b_events"]}
                    for row in writes.quiet
                ],
            )
        if writes.lapsed:
            # Its lease stays, and its status: another worker may hold it now. Only
            # the attempt goes (its next claim would say it may have gone out).
            self._take_back_attempts(session, writes.lapsed)
        kinds = {row["b_id"]: row["b_kind"] for row in (*released, *deferred, *writes.quiet)}
        if not kinds:
            return Counter()
        cancelled = session.scalars(
            sa.select(d.c.id).where(d.c.id.in_(list(kinds)), d.c.status == "cancelled")
        ).all()
        if cancelled:
            # never pushed: their claim's attempt goes (the hand-back above takes it
            # from queued rows only), and the cancel left their place under the daily
            # cap to this worker, which held them (flask_push.control.cancel), to give back
            self._take_back_attempts(session, cancelled)
            messages, users = policy.recipients(session, self.models, cancelled)
            policy.release_capped(
                session, self.models, self.settings.categories, messages, users=users
            )
        return Counter((kinds[id], "cancelled") for id in cancelled)

    def _take_back_attempts(self, session: Session, ids: Sequence[int]) -> None:
        """Take back the attempt a claim of ``ids`` counted, and nothing else: their
        lease and status stay (another worker may hold a lapsed one by now)."""
        d = self.models.Delivery.__table__
        session.execute(
            sa.update(d).where(d.c.id.in_(ids), d.c.attempts > 0).values(attempts=d.c.attempts - 1)
        )

    def _claim(self, session: Session, message_id: str | None, limit: int) -> list[int]:
        now = self.clock.now()
        params: dict[str, Any] = {"limit": limit}
        if self._postgresql:
            params["lease"] = self.lease  # from the database's clock
        else:
            params.update(now=now, until=now + self.lease)
        if message_id is not None:
            params["b_message_id"] = message_id
        if self._postgresql:
            session.execute(_CLAIM_IN_INDEX_ORDER)
        claimed = session.execute(self._claim_statement(message_id is not None), params).all()
        if self._postgresql and claimed:
            self.clock.observe(claimed[0][1], time.monotonic())
        return sorted(row[0] for row in claimed)

    def _claim_statement(self, of_a_message: bool) -> sa.Update:
        """The claim, built once for each shape: claims run many times a second,
        and building the statement costs more than running it. Its parameters
        are ``now``, ``until`` (the new lease), ``limit`` and ``b_message_id``.

        On PostgreSQL it goes by the database's clock instead (``lease`` is the
        lease's length), and returns it beside each id for the renewals and
        outcomes that follow (see :mod:`.db_clock`): workers on hosts whose clocks
        differ then agree on when a lease runs out, with no round trip of its own."""
        cached = self._statements.get(("claim", of_a_message))
        if cached is not None:
            return cast(sa.Update, cached)
        d = self.models.Delivery.__table__
        now: Any
        if self._postgresql:
            # the transaction's start: one time for the whole statement
            now = sa.func.now(type_=d.c.due_at.type)
            until = now + sa.bindparam("lease", type_=sa.Interval())
        else:
            now = sa.bindparam("now", type_=d.c.due_at.type)
            until = sa.bindparam("until", type_=d.c.lease_until.type)

        def due(table: Any) -> list[Any]:
            where = [
                table.c.status == "queued",
                table.c.due_at <= now,
                sa.or_(table.c.lease_until.is_(None), table.c.lease_until < now),
            ]
            if of_a_message:
                where.append(table.c.message_id == sa.bindparam("b_message_id"))
            return where

        # An alias, so that the CTE is not correlated to the UPDATE's own table
        # (which would make its LIMIT apply per row).
        candidate = d.alias("candidate")
        # SKIP LOCKED: concurrent workers on PostgreSQL take different rows without
        # waiting on each other, and a row another worker claimed since this
        # statement began is checked again before it is locked, so it no longer
        # matches. SQLite ignores FOR UPDATE: it runs the whole statement under its
        # one writer's lock.
        pick = (
            sa.select(candidate.c.id)
            .where(*due(candidate))
            .order_by(candidate.c.due_at)
            .limit(sa.bindparam("limit", type_=sa.Integer()))
            .with_for_update(skip_locked=True)
            # A CTE, which PostgreSQL runs once: a locking subquery inside IN (...)
            # may be rescanned by the plan, each rescan skipping the rows the last
            # one locked, which would claim far more than the LIMIT.
            .cte("picked")
        )
        statement = (
            sa.update(d)
            # UPDATE ... FROM picked, on the primary key alone. With IN (SELECT ...)
            # or the conditions repeated here, and the statistics of a fan-out just
            # written (they say one queued row), PostgreSQL compared every queued
            # row of the message with every picked one: a claim of 100 out of
            # 5,000 took 135 ms, and more the larger the fan-out.
            .where(d.c.id == pick.c.id)
            .values(lease_until=until, attempts=d.c.attempts + 1, updated_at=now)
            .returning(d.c.id, *([now] if self._postgresql else []))
        )
        self._statements[("claim", of_a_message)] = statement
        return statement

    def _load_statement(self) -> sa.Select[Any]:
        """What a claimed delivery needs for sending, built once; ``ids`` expands."""
        cached = self._statements.get(("load", True))
        if cached is not None:
            return cast("sa.Select[Any]", cached)
        m = self.models
        d, msg, sub, ins, tok = (
            model.__table__
            for model in (m.Delivery, m.Message, m.Subscription, m.Installation, m.ActivityToken)
        )
        statement = (
            sa.select(
                d.c.id,
                d.c.message_id,
                d.c.kind,
                d.c.subscription_id,
                d.c.installation_id,
                d.c.attempts,
                d.c.expires_at,
                msg.c.notification,
                sub.c.endpoint,
                sub.c.p256dh,
                sub.c.auth,
                sub.c.status,
                ins.c.device_token,
                ins.c.status,
                # the timeline, so that outcomes append to it in their own UPDATE
                d.c.events,
                # push.activity: the state, and the installation's Live Activity tokens
                msg.c.activity,
                tok.c.push_token,
                ins.c.push_to_start_token,
                # a provider stored for the installation's app sends it (app_providers)
                ins.c.app_id,
                # whom it was for, and whose the target is now
                d.c.user_id,
                sa.func.coalesce(sub.c.user_id, ins.c.user_id),
                # whose choices it is subject to (policy.at_claim)
                msg.c.category,
                # what it waited for before the claim: kept by a hold for quiet hours
                d.c.reason,
                d.c.due_at,
            )
            .select_from(d)
            .outerjoin(msg, msg.c.id == d.c.message_id)
            .outerjoin(sub, sub.c.id == d.c.subscription_id)
            .outerjoin(ins, ins.c.id == d.c.installation_id)
            .outerjoin(
                tok,
                sa.and_(
                    tok.c.installation_id == d.c.installation_id,
                    tok.c.activity_id == msg.c.activity_id,
                ),
            )
            .where(d.c.id.in_(sa.bindparam("ids", expanding=True)))
        )
        self._statements[("load", True)] = statement
        return statement

    def _started_here(self, session: Session, rows: Sequence[Any]) -> set[tuple[str, str]]:
        """``(activity id, installation id)`` of the claimed pushes of a ``start`` to a
        push-to-start token whose device had a push-to-start for that activity sent
        already: a start run twice (a host's job retried) must not start a second
        Live Activity there. One query, and only when a claim has such pushes (a
        start that waited and was superseded by the second was never sent: the
        second goes as the push-to-start)."""
        wanted: dict[str, set[str]] = {}
        for row in rows:  # by name: the load's columns (activity: the message's state)
            if (
                row.activity
                and row.activity.get("event") == "start"
                and row.push_token is None
                and row.push_to_start_token is not None
                and row.installation_id is not None
            ):
                wanted.setdefault(row.activity["id"], set()).add(row.installation_id)
        if not wanted:
            return set()
        d, m = self.models.Delivery, self.models.Message
        found = session.execute(
            sa.select(m.activity_id, d.installation_id, d.events)
            .join(m, m.id == d.message_id)
            .where(
                m.activity_id.in_(sorted(wanted)),
                d.installation_id.in_(sorted(set().union(*wanted.values()))),
                d.status == "sent",
            )
        )
        return {
            (activity_id, ins_id)
            for activity_id, ins_id, events in found
            if ins_id in wanted.get(activity_id, ())
            and any(e.get("what") == "attempt" and e.get("token") == "start" for e in events or ())
        }

    def _load(self, session: Session, ids: Sequence[int]) -> _Claim:
        """The claimed rows as pushes per provider, and the outcomes of those that
        need no sending (expired, gone, no provider)."""
        now = self.clock.now()
        rows = session.execute(self._load_statement(), {"ids": list(ids)}).all()
        finished: list[dict[str, Any]] = []
        pushes: list[tuple[Provider, OutgoingPush]] = []
        attempts: dict[int, int] = {}
        timelines: dict[int, list[dict[str, Any]]] = {}
        notifications: dict[tuple[str, int], Notification] = {}
        providers = self.providers
        stored = self._read_stored(session)
        started = self._started_here(session, rows)
        # turned off since it was queued, by a change no waiting push saw, or come
        # in the user's quiet hours: one query for the claim, and none for an app
        # whose categories are all required
        choices = policy.at_claim(
            session,
            self.models,
            self.settings.categories,
            [(row[0], row[21], row[20], row[3] is not None, row[23]) for row in rows],
            now,
        )
        off = choices.opted_out
        quiet: list[dict[str, Any]] = []
        for row in rows:
            (id, message_id, kind, sub_id, ins_id, tries, expires_at, shown) = row[:8]
            endpoint, p256dh, auth, sub_status, token, ins_status, events = row[8:15]
            stored_activity, activity_token, start_token, app_id, user_id, owner = row[15:21]
            provider: Provider | str | None = providers.get(kind)
            if app_id is not None and (kind, app_id) in stored:
                provider = stored[kind, app_id][1]
            timelines[id] = list(events or ())
            if tries > 1:
                timelines[id].extend(_lost_attempts(timelines[id], tries, kind, now))
            target_status = sub_status if sub_id is not None else ins_status
            target = "subscription" if sub_id is not None else "installation"
            if shown is None:
                finished.append(
                    _outcome(
                        id,
                        "failed",
                        "its message was deleted",
                        "message_deleted",
                        now,
                        provider=kind,
                    )
                )
            elif expires_at <= now:
                finished.append(
                    _outcome(
                        id,
                        "expired",
                        "its time to live ran out before it could be sent",
                        "ttl_expired",
                        expires_at,
                        provider=kind,
                        ttl=shown["ttl"],
                    )
                )
            elif target_status != ACTIVE:
                finished.append(
                    _outcome(
                        id,
                        "gone",
                        "the target was deleted or found dead before sending",
                        "target_dead",
                        now,
                        provider=kind,
                        target=target,
                    )
                )
            elif user_id is not None and user_id != owner:
                # another user registered the browser or device since: what was
                # queued for the last one is not theirs to see
                finished.append(
                    _outcome(
                        id,
                        "gone",
                        "its target was registered by another user before sending",
                        "target_changed_hands",
                        now,
                        provider=kind,
                        target=target,
                    )
                )
            elif id in off:
                # the user turned its category off on this channel after it was
                # queued, and no change of theirs reached it (a worker held it, or
                # the send was still being written): theirs not to get
                said = off[id]
                finished.append(
                    _outcome(
                        id,
                        "suppressed",
                        None,
                        "opted_out",
                        now,
                        provider=kind,
                        category=said["category"],
                        channel=said["channel"],
                    )
                )
            elif id in choices.quiet:
                # due before the user's quiet hours began, reached after: it waits
                # for their end, as it would have at send time
                end = choices.quiet[id]
                if end >= expires_at:
                    finished.append(_quiet_expired(id, kind, now, end, expires_at))
                else:
                    retry = policy.retry_then(row[22], row[23], tries - 1, events)
                    quiet.append(_quiet_held(id, kind, now, end, retry))
            elif self._never_finished(tries):
                # claimed again and again, and each time the worker holding it
                # stopped or failed before writing an outcome: without this, such a
                # delivery (a push that crashes its worker, say) is claimed forever
                finished.append(
                    _outcome(
                        id,
                        "failed",
                        f"gave up at claim {tries}: the last claims before it ended with no "
                        "outcome written",
                        "no_outcome",
                        now,
                        provider=kind,
                        attempts=tries,
                    )
                )
            elif provider is None:
                finished.append(
                    _outcome(
                        id,
                        "failed",
                        # found by a worker: the process that queued it may have had one
                        f"{not_configured_error(kind)} in the config of the process "
                        "delivering it (workers need the app's PUSH_* settings)",
                        "no_provider",
                        now,
                        provider=kind,
                        kind=kind,
                        how=settings_to_set(kind),
                        worker=_this_process(),
                    )
                )
            elif isinstance(provider, str):
                finished.append(
                    _outcome(
                        id,
                        "failed",
                        f"the {kind} provider stored for app {app_id!r} cannot send: {provider}",
                        "provider_unusable",
                        now,
                        provider=kind,
                        kind=kind,
                        answer=provider,
                    )
                )
            else:
                remaining = max(0, int((expires_at - now).total_seconds()))
                ttl = min(shown["ttl"], remaining)
                target_of: WebPushTarget | DeviceTarget
                click = None
                if registered(kind).targets == "subscription":
                    target_of = WebPushTarget(endpoint, p256dh, auth)
                    if self._clicks is not None:
                        click = str(self._clicks.dumps({"d": id, "m": message_id}))
                else:
                    target_of = DeviceTarget(token)
                activity = activity_from_json(stored_activity)
                if activity is not None and activity.token_only and activity_token is None:
                    # its token died or went with its installation since: the
                    # device had this state already (a farewell: nothing to end)
                    finished.append(
                        _outcome(
                            id,
                            "gone",
                            "the Live Activity token it was for was deleted before sending",
                            "target_dead",
                            now,
                            provider=kind,
                            target="Live Activity token",
                        )
                    )
                    continue
                if activity is not None and registered(kind).live_activities:
                    # an iOS Live Activity's own token, else the app's push-to-start
                    # token for a start that says what to start; else an ordinary
                    # alert to the device
                    if activity_token is not None:
                        target_of = DeviceTarget(activity_token, "activity")
                    elif (
                        activity.event == "start"
                        and activity.attributes is not None
                        and start_token is not None
                        and (activity.id, ins_id) not in started
                    ):
                        target_of = DeviceTarget(start_token, "start")
                attempts[id] = tries
                # one Notification for the pushes of a message that share a ttl
                notification = notifications.get((message_id, ttl))
                if notification is None:
                    notification = notifications[message_id, ttl] = notification_from_json(
                        shown, ttl=ttl
                    )
                push = OutgoingPush(
                    delivery_id=str(id),
                    message_id=message_id,
                    notification=notification,
                    target=target_of,
                    click_token=click,
                    activity=activity,
                    expires_at=expires_at,
                )
                pushes.append((provider, push))
        # An older state of an activity due again (an operator's retry, say) after a
        # newer one to the same target was sent or queued would replace it on the
        # screen: it is superseded instead of sent.
        states = [int(push.delivery_id) for _, push in pushes if push.activity is not None]
        late = overtaken(session, self.models, states) if states else {}
        if late:
            kinds = {row[0]: row[2] for row in rows}
            for id in sorted(late):
                del attempts[id]
                finished.append(_overtaken_outcome(id, late[id], now, kinds[id]))
            pushes = [(p, push) for p, push in pushes if int(push.delivery_id) not in late]
        messages = {row[0]: row[1] for row in rows} if finished else {}
        for outcome in finished:
            # decided without sending: said here, as the sent ones are in _record
            logger.log(
                logging.WARNING if outcome["b_status"] == "failed" else logging.INFO,
                "flask-push: delivery %s of %s %s without being sent: %s",
                outcome["b_id"],
                messages[outcome["b_id"]],
                outcome["b_status"],
                outcome["b_error"],
            )
        if quiet:
            logger.debug("flask-push: %d deliveries held for their users' quiet hours", len(quiet))
        return _Claim(len(ids), finished, pushes, attempts, timelines, quiet)

    def _record(
        self,
        session: Session,
        finished: list[dict[str, Any]],
        results: list[tuple[OutgoingPush, DeliveryResult]],
        attempts: Mapping[int, int],
        events: Mapping[int, list[dict[str, Any]]],
        handing_back: _HandBacks = _HandBacks(),
    ) -> tuple[list[tuple[str, str, str]], Counter[tuple[str, str]], set[int]]:
        """Write the outcomes (no commit); returns the targets found dead, how many
        outcomes of each provider and status (``retry``: a retry scheduled) were
        written, and the retries not made: dropped as ``superseded`` (a newer state
        of their activity to the same target overtook them), or ``expired`` (their
        next try would come after their time to live).

        Each outcome's events are appended to the timeline read with the claim, in
        the same executemany UPDATE as the outcome: a timeline costs no statement
        of its own."""
        now = self.clock.now()
        late = overtaken(
            session,
            self.models,
            [
                int(push.delivery_id)
                for push, result in results
                if result.status == "retry" and push.activity is not None
            ],
        )
        dropped = set(late)
        stamp = now.isoformat()  # once per batch: every event of it has this time
        # each retry's wait (None: given up), and of those due before their time to
        # live ends, the ones that would come in their user's quiet hours: held to
        # the end of the window, found in one query for the batch (retries only)
        waits: dict[int, float | None] = {}
        retry_due: dict[int, datetime] = {}
        for push, result in results:
            id = int(push.delivery_id)
            if result.status != "retry" or id in dropped:
                continue
            tries = attempts[id]
            wait = waits[id] = None if self._gives_up(tries) else backoff(tries, result.retry_after)
            if wait is not None:
                at = now + timedelta(seconds=wait)
                if push.expires_at is None or at < push.expires_at:
                    retry_due[id] = at
        quiet = policy.quiet_retries(session, self.models, self.settings.categories, retry_due)
        said: dict[tuple[int, str, str, str | None, str | None], str] = {}
        gone_targets: list[tuple[str, str, str, str | None]] = []
        dead_tokens: list[OutgoingPush] = []
        retried: list[dict[str, Any]] = []
        for push, result in results:
            id = int(push.delivery_id)
            tries = attempts[id]
            service = service_name(result.provider)
            answer = _answer(result, prefer_code=True)
            # an activity's push to an iPhone: to which of its tokens, else as an alert
            to = _pushed_to(push, result.provider)
            key = (tries, service, answer, result.reason, to)
            text = said.get(key)
            if text is None:
                text = said[key] = outcomes.attempt_detail(
                    result.reason, attempts=tries, service=service, answer=answer, to=to
                )
            tried = outcomes.event(
                "attempt",
                stamp,
                text,
                statusCode=result.status_code,
                # a Live Activity's own token or the app's push-to-start token, which
                # a Live Activity token registered later is caught up by
                token=_token_kind(push.target),
            )
            if result.status == "retry" and id in late:
                outcome = _overtaken_outcome(id, late[id], now, result.provider, error=result.error)
                outcome["b_events"].insert(0, tried)
                finished.append(outcome)
                why = "superseded by a newer state" if late[id] is None else "its user left out"
                _log_outcome(push, result, f"{why}, not retried")
            elif result.status == "retry":
                # no connection, or no answer to read: else the service answered
                unanswered = result.reason if result.reason in outcomes.UNANSWERED_RETRIES else None
                wait = waits[id]
                due = now + timedelta(seconds=wait) if wait is not None else None
                ends = push.expires_at
                held = quiet.get(id)  # the end of the quiet hours its retry falls in
                if due is None or (ends is not None and due >= ends):
                    # given up; or the next try would come after its time to live:
                    # expired now, and said why, rather than a retry promised for a
                    # time it will never be tried at
                    gave_up = due is None
                    if not gave_up:
                        dropped.add(id)  # not retried: the signal says so too
                    why = (
                        f"gave up after {tries} attempts"
                        if gave_up
                        else "its next try would come after its time to live"
                    )
                    outcome = _outcome(
                        id,
                        "failed" if gave_up else "expired",
                        f"{why}: {result.error or 'retry'}",
                        "gave_up" if gave_up else "retry_past_ttl",
                        now,
                        provider=result.provider,
                        # a give-up replaces a cancel made meanwhile, as what really
                        # happened; an expiry does not, as a retry would not have
                        sent=gave_up,
                        service=service,
                        answer=_answer(result, prefer_code=True),
                        attempts=tries,
                        unanswered=unanswered,
                        next=None if gave_up else ends,
                    )
                    outcome["b_events"].insert(0, tried)
                    finished.append(outcome)
                    # the log line ends with the answer itself
                    _log_outcome(push, result, f"{'failed' if gave_up else 'expired'}: {why}")
                elif held is not None and ends is not None and held >= ends:
                    # its quiet hours outlast its time to live: expired now, as a push
                    # held at send time is (and not retried: the signal says so too)
                    dropped.add(id)
                    text = outcomes.QUIET_HOURS_RETRY_EXPIRED.format(
                        at=outcomes.clock(due), next=outcomes.clock(held), ends=outcomes.clock(ends)
                    )
                    finished.append(
                        {
                            **_outcome(
                                id,
                                "expired",
                                f"{policy.QUIET_HOURS_EXPIRED}: {result.error or 'retry'}",
                                "quiet_hours_expired",
                                now,
                                provider=result.provider,
                            ),
                            "b_events": [tried, outcomes.event("expired", now, text)],
                        }
                    )
                    _log_outcome(push, result, f"expired: {policy.QUIET_HOURS_EXPIRED}")
                else:
                    waited = unanswered or (
                        "rate_limited"
                        if result.status_code == outcomes.RATE_LIMITED_STATUS
                        else "unavailable"
                    )
                    text = outcomes.detail(
                        waited,
                        service=service,
                        answer=_answer(result, prefer_code=True),
                        at=now,
                        next=due,
                        retry_after=result.retry_after,
                    )
                    said_then = [
                        tried,
                        outcomes.event("retry", now, text, nextAttemptAt=due.isoformat()),
                    ]
                    if held is not None:
                        # waiting for the end of the user's quiet hours, counted and
                        # shown as a push held at send time is (reason quiet_hours);
                        # the time its service asked for, and why, are kept for a
                        # change of the quiet hours (policy.held_retry)
                        text = outcomes.QUIET_HOURS_RETRY.format(
                            at=outcomes.clock(due), next=outcomes.clock(held)
                        )
                        said_then.append(
                            outcomes.event(
                                "deferred",
                                now,
                                text,
                                nextAttemptAt=held.isoformat(),
                                retryAt=due.isoformat(),
                                retryReason=waited,
                            )
                        )
                    retried.append(
                        {
                            "b_id": id,
                            "b_kind": result.provider,  # for the metrics
                            "b_error": result.error,
                            "b_due": held or due,
                            "b_reason": "quiet_hours" if held is not None else waited,
                            "b_events": said_then,
                        }
                    )
                    _log_outcome(
                        push,
                        result,
                        f"will be retried in {wait:.0f} s (attempt {tries})"
                        if held is None
                        else f"will be retried at {held.isoformat()}, when the user's quiet "
                        f"hours end (attempt {tries})",
                    )
            elif self._falls_back(push, result, attempts):
                # A Live Activity's own token (or the push-to-start one) is dead, not
                # the device: forget the token and send this state again at once, as
                # the ordinary alert the device's next states go as. Else a start to
                # a dead push-to-start token was lost on that iPhone.
                dead_tokens.append(push)
                text = outcomes.detail(
                    "live_token_dead",
                    service=service,
                    answer=_answer(result, prefer_code=result.status_code in (404, 410)),
                    at=now,
                    token=_target_word(push.target),
                )
                retried.append(
                    {
                        "b_id": id,
                        "b_kind": result.provider,  # for the metrics
                        "b_error": result.error,
                        "b_due": now,
                        "b_reason": "live_token_dead",
                        "b_events": [
                            tried,
                            outcomes.event("retry", now, text, nextAttemptAt=now.isoformat()),
                        ],
                    }
                )
                _log_outcome(push, result, "its token is dead: sent again as an alert")
            else:
                reason = result.reason or {"sent": "accepted", "gone": "unsubscribed"}.get(
                    result.status, "rejected"
                )
                outcome = _outcome(
                    id,
                    result.status,
                    result.error,
                    reason,
                    now,
                    sent=True,
                    provider=result.provider,
                    service=service,
                    # a plain "unsubscribed" (404, 410) by its status; any other
                    # death (APNs' 400 BadDeviceToken, which may mean the other
                    # environment) in the provider's own words, which say what to check
                    # (too large: the sentence says what it means and what to do)
                    answer=_answer(
                        result,
                        prefer_code=(result.status == "gone" and result.status_code in (404, 410))
                        or result.reason == "too_large",
                    ),
                    target=_target_word(push.target),
                    service_id=result.service_id,
                    **(_too_large(push, result) if reason == "too_large" else {}),
                )
                outcome["b_events"].insert(0, tried)
                if result.status == "sent":
                    outcome["b_sent_at"], outcome["b_service_id"] = now, result.service_id
                    if result.service_id:
                        outcome["b_events"][-1]["serviceId"] = result.service_id
                finished.append(outcome)
                if result.status != "sent":
                    _log_outcome(push, result, result.status)
                if result.status == "gone":
                    if isinstance(push.target, DeviceTarget) and push.target.kind != "device":
                        # a Live Activity's token (or the push-to-start one) died, not
                        # the installation: drop that token, never retry with it
                        dead_tokens.append(push)
                    else:
                        # the token it went to: one the app has changed since is alive
                        token = push.target.token if isinstance(push.target, DeviceTarget) else None
                        gone_targets.append(
                            (result.provider, push.delivery_id, result.error or "gone", token)
                        )
        # each statement in id order, and several locked in that order first
        # (``handing_back``: the ids of the statements the hand-backs make after these)
        finished.sort(key=_delivery_id)
        retried.sort(key=_delivery_id)
        outcomes_by_kind = [[row["b_id"] for row in rows] for rows in (finished, retried)]
        later = [*handing_back.executemany, *handing_back.in_lists]
        self._lock_in_order(session, [*outcomes_by_kind, *later], handing_back.in_lists)
        if finished:
            session.execute(
                self._outcome_statement(retry=False),
                [
                    {
                        "b_sent_at": None,
                        "b_service_id": None,
                        **row,
                        "b_error": _clip(row["b_error"]),
                        "b_now": now,
                        "b_events": [*events.get(row["b_id"], ()), *row["b_events"]],
                    }
                    for row in finished
                ],
            )
        if retried:
            session.execute(
                self._outcome_statement(retry=True),
                [
                    {
                        **row,
                        "b_error": _clip(row["b_error"]),
                        "b_now": now,
                        "b_events": [*events.get(row["b_id"], ()), *row["b_events"]],
                    }
                    for row in retried
                ],
            )
        stopped = self._stopped(session, finished, retried)
        written = Counter(
            (
                row.get("b_kind") or "unknown",
                "cancelled" if row["b_id"] in stopped else row["b_status"],
            )
            for row in finished
        )
        written.update(
            (row["b_kind"], "cancelled" if row["b_id"] in stopped else "retry") for row in retried
        )
        # A push the user will never get no longer counts against their daily cap:
        # one superseded by a newer state, one whose time to live ran out unsent, one
        # ended before it was pushed (no provider, its target dead). Only these
        # users' places are looked at: a broadcast's every user, at every batch of
        # its outcomes, would cost the square of its size.
        unsent = [
            row["b_id"]
            for row in finished
            if row["b_status"] in ("expired", "superseded", "suppressed")
            or row["b_reason"] in outcomes.NEVER_PUSHED
        ]
        # and one a cancel won against: an end decided without sending, or a retry
        # (the service did not take it), never pushed now
        unsent += sorted(stopped)
        if unsent:
            messages, users = policy.recipients(session, self.models, unsent)
            policy.release_capped(
                session, self.models, self.settings.categories, messages, users=users
            )
        self._drop_tokens(session, dead_tokens)
        return self._mark_dead(session, gone_targets, now), written, dropped

    def _stopped(
        self, session: Session, finished: list[dict[str, Any]], retried: list[dict[str, Any]]
    ) -> set[int]:
        """The ids of the outcomes just written over that a cancel won against: a
        retry, or an end decided without sending (:func:`_outcome`'s ``b_from``), is
        written only to a row still queued. Such a delivery stays ``cancelled``, and
        this worker, which held it, counts it so (:func:`flask_push.control.cancel`
        left it to it). One query, only for a write that has such outcomes: the
        common ones (sent, gone, failed) replace a cancel."""
        ids = [row["b_id"] for row in finished if row["b_from"] == "queued"]
        ids += [row["b_id"] for row in retried]
        if not ids:
            return set()
        d = self.models.Delivery
        return set(session.scalars(sa.select(d.id).where(d.id.in_(ids), d.status == "cancelled")))

    def _drop_tokens(self, session: Session, pushes: Sequence[OutgoingPush]) -> None:
        """Forget the Live Activity and push-to-start tokens APNs said are dead."""
        if not pushes:
            return
        m = self.models
        for push in pushes:
            assert isinstance(push.target, DeviceTarget)
            token = push.target.token
            if push.target.kind == "activity":
                session.execute(
                    sa.delete(m.ActivityToken).where(m.ActivityToken.push_token == token)
                )
            else:
                session.execute(
                    sa.update(m.Installation)
                    .where(m.Installation.push_to_start_token == token)
                    .values(push_to_start_token=None),
                    execution_options={"synchronize_session": False},
                )

    def _outcome_statement(self, retry: bool) -> sa.Update:
        """An outcome (a final status, or a retry at ``b_due``) for ``b_id``, built once.

        Only a row still ``queued`` takes it, so a cancel made meanwhile wins; but
        the outcome of a push that was on the network when its message was
        cancelled (``b_from`` = ``cancelled``) replaces the cancel, since it is what
        really happened."""
        cached = self._statements.get(("outcome", retry))
        if cached is not None:
            return cast(sa.Update, cached)
        # Core table, not the mapped class: a list of parameters then runs as one
        # executemany UPDATE (the ORM would read it as "bulk update by primary key").
        d = self.models.Delivery.__table__
        values: dict[str, Any] = {
            "error": sa.bindparam("b_error"),
            "lease_until": None,
            "updated_at": sa.bindparam("b_now", type_=d.c.updated_at.type),
            "events": sa.bindparam("b_events", type_=d.c.events.type),
            "reason": sa.bindparam("b_reason"),
        }
        where = [d.c.id == sa.bindparam("b_id")]
        if retry:
            values["due_at"] = sa.bindparam("b_due", type_=d.c.due_at.type)
            where.append(d.c.status == "queued")
        else:
            values["status"] = sa.bindparam("b_status")
            values["sent_at"] = sa.bindparam("b_sent_at", type_=d.c.sent_at.type)
            values["service_id"] = sa.bindparam("b_service_id")
            where.append(d.c.status.in_(["queued", sa.bindparam("b_from")]))
        statement = sa.update(d).where(*where).values(**values)
        self._statements[("outcome", retry)] = statement
        return statement

    def _mark_dead(
        self, session: Session, gone: list[tuple[str, str, str, str | None]], now: datetime
    ) -> list[tuple[str, str, str]]:
        """Mark the subscriptions and installations of ``gone`` deliveries
        (``(provider, delivery id, reason, device token pushed to)``) dead, an
        installation only while it still has the token its push service refused (the
        app may have registered a new one since the claim); returns ``(kind, target
        id, reason)`` of each one this call killed."""
        if not gone:
            return []
        m = self.models
        d = m.Delivery
        reasons = {int(delivery_id): reason for _, delivery_id, reason, _ in gone}
        tokens = {int(delivery_id): token for _, delivery_id, _, token in gone}
        rows = session.execute(
            sa.select(d.id, d.subscription_id, d.installation_id).where(d.id.in_(reasons))
        ).all()
        dead: list[tuple[str, str, str]] = []
        for model, kind, column in (
            (m.Subscription, "subscription", 1),
            (m.Installation, "installation", 2),
        ):
            params = [
                {
                    "b_id": row[column],
                    "b_reason": _clip(reasons[row[0]], MAX_TEXT),
                    "b_token": tokens[row[0]] if kind == "installation" else None,
                }
                for row in rows
                if row[column] is not None
            ]
            if not params:
                continue
            for param in params:
                still = [] if param["b_token"] is None else [model.device_token == param["b_token"]]
                # One UPDATE per target: the row count says whether this call killed it.
                result = session.execute(
                    sa.update(model)
                    .where(model.id == param["b_id"], model.status == ACTIVE, *still)
                    .values(status=DEAD, dead_reason=param["b_reason"], dead_at=now),
                    execution_options={"synchronize_session": False},
                )
                if getattr(result, "rowcount", 0):
                    dead.append((kind, param["b_id"], param["b_reason"]))
        return dead

    def _signal(
        self,
        results: list[tuple[OutgoingPush, DeliveryResult]],
        attempts: Mapping[int, int],
        dead: list[tuple[str, str, str]],
        dropped: set[int],
    ) -> None:
        app = self.app
        for push, result in results:
            if result.status == "sent":
                signals.delivery_succeeded.send(app, push=push, result=result)
            else:
                id = int(push.delivery_id)
                will_retry = (
                    result.status == "retry"
                    and id not in dropped
                    and not self._gives_up(attempts[id])
                ) or self._falls_back(push, result, attempts)
                signals.delivery_failed.send(app, push=push, result=result, will_retry=will_retry)
        for kind, target_id, reason in dead:
            signals.subscription_gone.send(app, kind=kind, target_id=target_id, reason=reason)


def _log_outcome(push: OutgoingPush, result: DeliveryResult, what: str) -> None:
    """One line per delivery that did not arrive, or not yet: which message, which
    target, what the push service answered. Failures are warnings; a target gone
    (it is marked dead) and a retry are information."""
    level = logging.WARNING if what.startswith("failed") else logging.INFO
    if logger.isEnabledFor(level):
        error = one_line(result.error or "no reason given")
        code = result.status_code
        answer = f"HTTP {code}, " if code and str(code) not in error else ""
        logger.log(
            level,
            "flask-push: delivery %s of %s to %s %s %s: %s%s",
            push.delivery_id,
            push.message_id,
            result.provider,
            describe_target(push.target),
            what,
            answer,
            error,
        )


def describe_target(target: WebPushTarget | DeviceTarget) -> str:
    """A target as a log line shows it: enough to find it, not its secrets (an
    endpoint's origin and the end of its path, a token's first characters)."""
    if isinstance(target, WebPushTarget):
        origin, _, path = target.endpoint.partition("://")[2].partition("/")
        return f"{target.endpoint.partition('://')[0]}://{origin}/…{path[-8:]}"
    return f"token {target.token[:8]}…"


def _commit_without_waiting(session: Session) -> None:
    """Commit without waiting for the disk flush on PostgreSQL.

    Claims and outcomes are written many times a second; a flush costs tens of
    milliseconds. A commit lost to a database crash only means a delivery is
    claimed or sent again, which the outbox allows within its in-flight window
    anyway; never a lost one, since a row stays queued until its outcome is kept.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SET LOCAL synchronous_commit = off"))
    session.commit()


def _lost_attempts(
    events: list[dict[str, Any]], claims: int, kind: str, now: datetime
) -> list[dict[str, Any]]:
    """An attempt event for each earlier claim of a delivery (``claims`` counts this
    one) that ended with nothing written, as when its worker was killed: the timeline
    counts them as ``attempts`` does, and says the push may have gone out."""
    # attempts count from an operator's retry on, which starts them afresh
    since = next((n for n in range(len(events) - 1, -1, -1) if events[n].get("operator")), -1)
    seen = sum(event["what"] == "attempt" for event in events[since + 1 :])
    return [
        outcomes.event(
            "attempt",
            now,
            outcomes.LOST_ATTEMPT.format(attempts=number, service=service_name(kind)),
        )
        for number in range(seen + 1, claims)
    ]


def _this_process() -> str:
    """This process, as an operator finds it: a worker whose config lacks a provider
    the app has (one started without the app's settings) fails what it claims. Read
    when said: a process forked after the import (a Celery pool's, gunicorn's) has a
    pid of its own."""
    return f"host {socket.gethostname()}, pid {os.getpid()}"


def _outcome(
    id: int,
    status: str,
    error: str | None,
    reason: str,
    at: datetime,
    *,
    sent: bool = False,
    provider: str | None = None,
    **values: Any,
) -> dict[str, Any]:
    """A final outcome's parameters, with its reason and its timeline event
    (``sent``: the push went on the network, so it replaces a cancel)."""
    text = outcomes.detail(reason, at=at, **values)
    return {
        "b_id": id,
        "b_status": status,
        "b_error": error,
        "b_reason": reason,
        "b_from": "cancelled" if sent else "queued",
        "b_events": [outcomes.event(status, at, text)],
        # b_kind is for the metrics only; the UPDATE ignores parameters it does not name
        "b_kind": provider,
    }


def _overtaken_outcome(
    id: int, left_out: str | None, at: datetime, provider: str | None, *, error: str | None = None
) -> dict[str, Any]:
    """The ``superseded`` outcome of a push :func:`overtaken` found: a newer state of
    its activity went to its target (``left_out`` None), or a newer call left its
    user ``left_out`` out."""
    if left_out is not None:
        error = error or "a newer call of its activity left its user out"
        return _outcome(id, "superseded", error, "left_out", at, provider=provider, user=left_out)
    error = error or "a newer state of its activity was sent or queued first"
    return _outcome(id, "superseded", error, "superseded", at, provider=provider)


def _quiet_held(
    id: int, kind: str, at: datetime, end: datetime, retry: tuple[datetime, str] | None
) -> dict[str, Any]:
    """A claim handed back because its user's quiet hours began before a worker
    reached it: due at their ``end``, ``queued`` with reason ``quiet_hours`` as a
    push held at send time is. ``retry``: when it was due as a retry, and why,
    kept for a change of the quiet hours (:func:`flask_push.policy.held_retry`)."""
    text = outcomes.QUIET_HOURS_CLAIMED.format(at=outcomes.clock(at), next=outcomes.clock(end))
    kept = {"retryAt": retry[0].isoformat(), "retryReason": retry[1]} if retry else {}
    said = outcomes.event("deferred", at, text, nextAttemptAt=end.isoformat(), **kept)
    return {"b_id": id, "b_kind": kind, "b_due": end, "b_events": [said]}


def _quiet_expired(
    id: int, kind: str, at: datetime, end: datetime, expires_at: datetime
) -> dict[str, Any]:
    """The ``expired`` outcome of a push a worker reached in its user's quiet hours,
    which last until ``end``, past its time to live."""
    text = outcomes.QUIET_HOURS_CLAIMED_EXPIRED.format(
        at=outcomes.clock(at), next=outcomes.clock(end), ends=outcomes.clock(expires_at)
    )
    return {
        **_outcome(
            id, "expired", policy.QUIET_HOURS_EXPIRED, "quiet_hours_expired", at, provider=kind
        ),
        "b_events": [outcomes.event("expired", at, text)],
    }


def _token_kind(target: WebPushTarget | DeviceTarget) -> str | None:
    """Which of an installation's tokens a push went to, when not the device's own."""
    if isinstance(target, DeviceTarget) and target.kind != "device":
        return target.kind
    return None


def _pushed_to(push: OutgoingPush, provider: str) -> str | None:
    """Where a push of a live activity went on a platform with Live Activities, as an
    attempt says it: the Live Activity's own token, the app's push-to-start token, or
    the device as an alert (the app registered no token for the activity yet), which
    the lock screen's Live Activity does not show. None for any other push."""
    target = push.target
    if push.activity is None or not isinstance(target, DeviceTarget):
        return None
    if target.kind == "activity":
        return "to the Live Activity's own token"
    if target.kind == "start":
        return "to the app's push-to-start token"
    try:
        live = registered(provider).live_activities
    except KeyError:  # a kind of no registered provider (a test's own)
        return None
    return "to the device as an alert (no Live Activity token for it yet)" if live else None


def _target_word(target: WebPushTarget | DeviceTarget) -> str:
    """What a sentence calls the target a push went to: a Live Activity's own token
    dies alone, never its installation."""
    if isinstance(target, WebPushTarget):
        return "subscription"
    return {"activity": "Live Activity token", "start": "push-to-start token"}.get(
        target.kind, "installation"
    )


def _deferred(now: datetime, delay: timedelta, service: str) -> dict[str, Any]:
    text = outcomes.detail("stalled", service=service, at=now, next=now + delay)
    return outcomes.event("deferred", now, text, nextAttemptAt=(now + delay).isoformat())


def _too_large(push: OutgoingPush, result: DeliveryResult) -> dict[str, str]:
    """The values of a ``too_large`` sentence: the limit of the provider that sent
    it (``max_payload``) and what to shorten, said alike for every provider."""
    try:
        sender = provider_class(result.provider)
    except (ImportError, AttributeError, TypeError, ValueError):  # a test's own kind
        return {}
    limit = getattr(sender, "max_payload", None)
    if not isinstance(limit, int):
        return {}
    return outcomes.too_large_values(
        limit, sender.payload_counted, activity=push.activity is not None
    )


def _answer(result: DeliveryResult, *, prefer_code: bool = False) -> str:
    """What the push service answered, as a sentence says it: ``410 Gone``, or the
    error it gave (which names its status), or a connection failure."""
    code = result.status_code
    said = None
    if code is not None:
        try:
            said = f"{code} {HTTPStatus(code).phrase}"
        except ValueError:
            said = str(code)
    if said and (prefer_code or not result.error):
        return said
    if code is not None and result.error and str(code) not in result.error:
        return f"{code} {result.error}"  # APNs' "BadDeviceToken ...": the status first
    return result.error or said or "nothing"


def _clip(text: str | None, length: int = 2000) -> str | None:
    return text[:length] if text is not None else None
