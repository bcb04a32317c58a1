"""Delivery: claim due outbox rows, send them through the providers, record outcomes.

A :class:`Dispatcher` belongs to one app and is used by one thread at a time
(a queue's worker, or the caller of an inline ``send()``). It owns an asyncio
event loop that lives as long as it does, so that the providers' connection
pools (aiohttp, HTTP/2 to APNs) stay warm between batches.

Every state lives in the database. A claim sets a lease (``lease_until``) on
queued rows; a worker that dies mid-batch leaves them queued, and another
claims them once the lease has run out. Duplicates are limited to that
in-flight window: the batches on the network when the worker died
(:data:`PIPELINE_DEPTH` at most).
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Flask
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.orm import Session, aliased

from . import signals, validation
from .config import PushSettings
from .message import DeliveryResult, DeviceTarget, OutgoingPush, WebPushTarget
from .models import ACTIVE, DEAD, Models, utcnow
from .providers import Provider, provider_class
from .providers.memory import MemoryProvider
from .sending import notification_from_json

_T = TypeVar("_T")

#: sends of one delivery before it is ``failed``
DEFAULT_MAX_ATTEMPTS = 8
#: the first retry waits about this long, doubling each time up to RETRY_CAP
RETRY_BASE = 10.0
RETRY_CAP = 3600.0
_CLICK_SALT = "flask-push.click"
#: batches on the network at once in :meth:`Dispatcher.run_until_idle`: two, so
#: that one is sending while the other's outcomes are written and the next claimed
PIPELINE_DEPTH = 2


def click_serializer(secret_key: str | bytes) -> URLSafeSerializer:
    """Signs the click tokens of Web Push payloads (``POST /messages/<id>/clicks``)."""
    return URLSafeSerializer(secret_key, salt=_CLICK_SALT)


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
        delay = max(delay, float(retry_after))
    return delay


@dataclass(frozen=True)
class _Batch:
    """One claim, loaded: what to send per provider, and what is already decided."""

    claimed: int
    finished: list[dict[str, Any]]
    pushes: dict[str, list[OutgoingPush]]
    #: delivery id -> attempts so far, this one included
    attempts: dict[int, int]


def _never() -> bool:
    return False


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
            loop, future, work = job
            try:
                result = work()
            except BaseException as err:  # noqa: BLE001 - handed to the awaiting task
                loop.call_soon_threadsafe(_resolve, future, None, err)
            else:
                loop.call_soon_threadsafe(_resolve, future, result, None)


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _private_hosts(patterns: Iterable[str]) -> list[str]:
    """The endpoint host patterns that name an IP literal or a loopback name exactly:
    the only private hosts a Web Push endpoint may point at (CONTRACT.md)."""
    return [
        p.strip("[]")
        for p in patterns
        if validation.is_special_address(p.strip("[]")) and not any(c in p for c in "*?[")
    ]


class Dispatcher:
    """Claims and delivers due deliveries of one app.

    :param app: the app; its config and database are used.
    :param models: the push models.
    :param engine: where the push tables live.
    :param batch_size: deliveries per claim; ``PUSH_DELIVERY_BATCH`` by default.
    :param lease: how long a claim holds its rows; ``PUSH_DELIVERY_LEASE`` by default.
    :param max_attempts: tries before a delivery is ``failed``.
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
    ) -> None:
        self.app = app
        self.models = models
        self.engine = engine
        self.settings = settings
        self.batch_size = batch_size or settings.delivery_batch
        self.lease = lease or timedelta(seconds=settings.delivery_lease)
        self.max_attempts = max_attempts
        secret = app.config.get("SECRET_KEY")
        self._clicks = click_serializer(secret) if secret else None
        self._loop = asyncio.new_event_loop()
        #: claims and outcomes of overlapping batches, one at a time, off the loop
        self._db = _DatabaseThread()
        self._providers: dict[str, Provider] | None = None
        self._lock = threading.Lock()
        self.closed = False

    # -- providers -----------------------------------------------------------------

    def _make_providers(self) -> dict[str, Provider]:
        """Built inside the loop, once: their pools are bound to it."""
        if self.settings.suppress_send:
            return {kind: MemoryProvider(kind) for kind in self.settings.providers}
        providers: dict[str, Provider] = {}
        for kind, settings in self.settings.providers.items():
            options: dict[str, Any] = {}
            if kind == "webpush":
                options = {
                    "allow_http": self.settings.allow_http_endpoints,
                    "allow_private_hosts": _private_hosts(self.settings.endpoint_hosts),
                }
            providers[kind] = provider_class(kind).from_settings(settings, **options)
        return providers

    @property
    def providers(self) -> dict[str, Provider]:
        if self._providers is None:

            async def build() -> dict[str, Provider]:
                return self._make_providers()

            self._providers = self._loop.run_until_complete(build())
        return self._providers

    def close(self) -> None:
        """Close the providers' connections and the event loop."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            providers, self._providers = self._providers, None
            try:
                for provider in (providers or {}).values():
                    self._loop.run_until_complete(provider.aclose())
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.run_until_complete(self._loop.shutdown_default_executor())
            finally:
                self._loop.close()
                self._db.stop()

    # -- one round -----------------------------------------------------------------

    def run_once(self, *, message_id: str | None = None) -> int:
        """Claim one batch of due deliveries (of ``message_id`` only, when given),
        send it and record the outcomes; returns how many rows were claimed."""
        with self._lock:
            self._ready()
            batch = self._claim_and_load(message_id)
            if batch is None:
                return 0
            results = self._loop.run_until_complete(self._send(batch))
            self._record_batch(batch, results)
            return batch.claimed

    def run_until_idle(
        self, *, message_id: str | None = None, stop: Callable[[], bool] | None = None
    ) -> int:
        """Deliver batch after batch until nothing is due (or ``stop()`` says so);
        returns how many rows were claimed.

        Batches overlap: while one is on the network, the next is claimed and the
        last one's outcomes are written, on a database thread of the dispatcher's
        own. So the requests in flight never drain between two batches, and the
        in-flight window (what a killed worker may send twice) is
        :data:`PIPELINE_DEPTH` batches.
        """
        with self._lock:
            self._ready()
            return self._loop.run_until_complete(self._pump(message_id, stop or _never))

    def _ready(self) -> None:
        """Refuse a closed dispatcher; build the providers now, outside the loop
        (building runs the loop, which cannot be run from inside itself)."""
        if self.closed:
            raise RuntimeError("this dispatcher is closed")
        self.providers  # noqa: B018 - built on first access

    async def _pump(self, message_id: str | None, stop: Callable[[], bool]) -> int:
        loop = asyncio.get_running_loop()
        sending: set[asyncio.Task[None]] = set()
        claimed = 0
        try:
            while not stop():
                batch = await self._on_db_thread(self._claim_and_load, message_id)
                if batch is None:
                    break
                claimed += batch.claimed
                sending.add(loop.create_task(self._send_and_record(batch)))
                if len(sending) >= PIPELINE_DEPTH:
                    done, sending = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                    # A batch whose outcomes could not be written ends the round;
                    # its rows stay leased and are sent again after the lease.
                    for task in done:
                        task.result()
        finally:
            # The batches on the network finish, whatever stopped the round.
            outcomes = await asyncio.gather(*sending, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return claimed

    async def _send_and_record(self, batch: _Batch) -> None:
        results = await self._send(batch)
        await self._on_db_thread(self._record_batch, batch, results)

    async def _on_db_thread(self, work: Callable[..., _T], *args: Any) -> _T:
        """``work(*args)`` on the database thread, in an app context as on the
        caller's thread (signal receivers may use ``current_app``)."""

        def run() -> _T:
            with self.app.app_context():
                return work(*args)

        return await self._db.run(run)

    def _claim_and_load(self, message_id: str | None) -> _Batch | None:
        with Session(self.engine) as session:
            ids = self._claim(session, message_id)
            if not ids:
                return None
            return self._load(session, ids)

    def _record_batch(
        self, batch: _Batch, results: list[tuple[OutgoingPush, DeliveryResult]]
    ) -> None:
        with Session(self.engine) as session:
            self._record(session, list(batch.finished), results, batch.attempts)

    def _claim(self, session: Session, message_id: str | None) -> list[int]:
        d = self.models.Delivery
        now = utcnow()

        def due(table: Any) -> list[Any]:
            where = [
                table.status == "queued",
                table.due_at <= now,
                sa.or_(table.lease_until.is_(None), table.lease_until < now),
            ]
            if message_id is not None:
                where.append(table.message_id == message_id)
            return where

        # An alias, so that the subquery is not correlated to the UPDATE's own
        # table (which would make its LIMIT apply per row).
        candidate = aliased(d)
        # SKIP LOCKED: concurrent workers on PostgreSQL take different rows without
        # waiting on each other. SQLite ignores FOR UPDATE; it runs one writer at a
        # time, and the conditions repeated in the UPDATE keep a row from being
        # claimed twice.
        pick = (
            sa.select(candidate.id)
            .where(*due(candidate))
            .order_by(candidate.due_at)
            .limit(self.batch_size)
            .with_for_update(skip_locked=True)
            # A CTE, which PostgreSQL runs once: a locking subquery inside IN (...)
            # may be rescanned by the plan, each rescan skipping the rows the last
            # one locked, which would claim far more than the LIMIT.
            .cte("picked")
        )
        claimed = session.execute(
            sa.update(d)
            .where(d.id.in_(sa.select(pick.c.id)), *due(d))
            .values(lease_until=now + self.lease, attempts=d.attempts + 1, updated_at=now)
            .returning(d.id),
            execution_options={"synchronize_session": False},
        )
        ids = sorted(claimed.scalars())
        _commit_without_waiting(session)
        return ids

    def _load(self, session: Session, ids: Sequence[int]) -> _Batch:
        """The claimed rows as pushes per provider, and the outcomes of those that
        need no sending (expired, gone, no provider)."""
        m = self.models
        d, msg, sub, ins = m.Delivery, m.Message, m.Subscription, m.Installation
        now = utcnow()
        rows = session.execute(
            sa.select(
                d.id,
                d.message_id,
                d.kind,
                d.subscription_id,
                d.installation_id,
                d.attempts,
                d.expires_at,
                msg.notification,
                sub.endpoint,
                sub.p256dh,
                sub.auth,
                sub.status,
                ins.device_token,
                ins.status,
            )
            .outerjoin(msg, msg.id == d.message_id)
            .outerjoin(sub, sub.id == d.subscription_id)
            .outerjoin(ins, ins.id == d.installation_id)
            .where(d.id.in_(ids))
        ).all()
        finished: list[dict[str, Any]] = []
        batches: dict[str, list[OutgoingPush]] = defaultdict(list)
        attempts: dict[int, int] = {}
        providers = self.providers
        for row in rows:
            (id, message_id, kind, sub_id, ins_id, tries, expires_at, shown) = row[:8]
            endpoint, p256dh, auth, sub_status, token, ins_status = row[8:]
            target_status = sub_status if sub_id is not None else ins_status
            if shown is None:
                finished.append(_outcome(id, "failed", "its message was deleted"))
            elif expires_at <= now:
                finished.append(_outcome(id, "expired", "its ttl ran out before it could be sent"))
            elif target_status != ACTIVE:
                finished.append(
                    _outcome(id, "gone", "the target was deleted or found dead before sending")
                )
            elif kind not in providers:
                finished.append(_outcome(id, "failed", f"no {kind} provider is configured"))
            else:
                remaining = max(0, int((expires_at - now).total_seconds()))
                ttl = min(shown["ttl"], remaining)
                target: WebPushTarget | DeviceTarget
                click = None
                if kind == "webpush":
                    target = WebPushTarget(endpoint, p256dh, auth)
                    if self._clicks is not None:
                        click = str(self._clicks.dumps({"d": id, "m": message_id}))
                else:
                    target = DeviceTarget(token)
                attempts[id] = tries
                batches[kind].append(
                    OutgoingPush(
                        delivery_id=str(id),
                        message_id=message_id,
                        notification=notification_from_json(shown, ttl=ttl),
                        target=target,
                        click_token=click,
                    )
                )
        return _Batch(len(ids), finished, dict(batches), attempts)

    async def _send(self, batch: _Batch) -> list[tuple[OutgoingPush, DeliveryResult]]:
        results: list[tuple[OutgoingPush, DeliveryResult]] = []
        for kind, pushes in batch.pushes.items():
            provider = self.providers[kind]
            sent = await provider.send_batch(pushes)
            results.extend(zip(pushes, sent, strict=True))
            if isinstance(provider, MemoryProvider):
                for push in pushes:
                    signals.push_recorded.send(self.app, push=push, kind=kind)
        return results

    def _record(
        self,
        session: Session,
        finished: list[dict[str, Any]],
        results: list[tuple[OutgoingPush, DeliveryResult]],
        attempts: Mapping[int, int],
    ) -> None:
        # Core table, not the mapped class: a list of parameters then runs as one
        # executemany UPDATE (the ORM would read it as "bulk update by primary key").
        d = self.models.Delivery.__table__
        now = utcnow()
        gone_targets: list[tuple[str, str, str]] = []
        retried: list[dict[str, Any]] = []
        for push, result in results:
            id = int(push.delivery_id)
            if result.status == "retry":
                tries = attempts[id]
                if tries >= self.max_attempts:
                    error = f"gave up after {tries} attempts: {result.error or 'retry'}"
                    finished.append(_outcome(id, "failed", error))
                else:
                    due = now + timedelta(seconds=backoff(tries, result.retry_after))
                    retried.append({"b_id": id, "b_error": result.error, "b_due": due})
            else:
                finished.append(_outcome(id, result.status, result.error))
                if result.status == "gone":
                    kind = "webpush" if isinstance(push.target, WebPushTarget) else "device"
                    gone_targets.append((kind, push.delivery_id, result.error or "gone"))
        if finished:
            session.execute(
                sa.update(d)
                .where(d.c.id == sa.bindparam("b_id"))
                .values(
                    status=sa.bindparam("b_status"),
                    error=sa.bindparam("b_error"),
                    lease_until=None,
                    updated_at=now,
                ),
                [{**row, "b_error": _clip(row["b_error"])} for row in finished],
            )
        if retried:
            session.execute(
                sa.update(d)
                .where(d.c.id == sa.bindparam("b_id"))
                .values(
                    due_at=sa.bindparam("b_due"),
                    error=sa.bindparam("b_error"),
                    lease_until=None,
                    updated_at=now,
                ),
                [{**row, "b_error": _clip(row["b_error"])} for row in retried],
            )
        dead = self._mark_dead(session, gone_targets, now)
        _commit_without_waiting(session)
        self._signal(results, attempts, dead)

    def _mark_dead(
        self, session: Session, gone: list[tuple[str, str, str]], now: datetime
    ) -> list[tuple[str, str, str]]:
        """Mark the subscriptions and installations of ``gone`` deliveries dead;
        returns ``(kind, target id, reason)`` of each one this call killed."""
        if not gone:
            return []
        m = self.models
        d = m.Delivery
        reasons = {int(delivery_id): reason for _, delivery_id, reason in gone}
        rows = session.execute(
            sa.select(d.id, d.subscription_id, d.installation_id).where(d.id.in_(reasons))
        ).all()
        dead: list[tuple[str, str, str]] = []
        for model, kind, column in (
            (m.Subscription, "subscription", 1),
            (m.Installation, "installation", 2),
        ):
            params = [
                {"b_id": row[column], "b_reason": _clip(reasons[row[0]], 255)}
                for row in rows
                if row[column] is not None
            ]
            if not params:
                continue
            for param in params:
                # One UPDATE per target: the row count says whether this call killed it.
                result = session.execute(
                    sa.update(model)
                    .where(model.id == param["b_id"], model.status == ACTIVE)
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
    ) -> None:
        app = self.app
        for push, result in results:
            if result.status == "sent":
                signals.delivery_succeeded.send(app, push=push, result=result)
            else:
                will_retry = (
                    result.status == "retry" and attempts[int(push.delivery_id)] < self.max_attempts
                )
                signals.delivery_failed.send(app, push=push, result=result, will_retry=will_retry)
        for kind, target_id, reason in dead:
            signals.subscription_gone.send(app, kind=kind, target_id=target_id, reason=reason)


def _commit_without_waiting(session: Session) -> None:
    """Commit without waiting for the disk flush on PostgreSQL.

    Claims and outcomes sit between every two batches; a flush costs tens of
    milliseconds. A commit lost to a database crash only means a delivery is
    claimed or sent again, which the outbox allows within its in-flight window
    anyway; never a lost one, since a row stays queued until its outcome is kept.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SET LOCAL synchronous_commit = off"))
    session.commit()


def _outcome(id: int, status: str, error: str | None) -> dict[str, Any]:
    return {"b_id": id, "b_status": status, "b_error": error}


def _clip(text: str | None, length: int = 2000) -> str | None:
    return text[:length] if text is not None else None
