"""The :class:`Push` extension object and its per-app state."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy

from . import config, inbox, sending, signals, sw
from .config import PushSettings
from .dispatch import Dispatcher
from .errors import ValidationError
from .ids import new_id
from .message import OutgoingPush
from .models import Models, models_for, utcnow
from .providers import Provider, provider_class
from .queues import ThreadWorker
from .schemas.base import Context
from .schemas.errors import by_alias, check, parse
from .schemas.fields import DEFAULT_TAKE, UserId
from .schemas.inbox import InboxItem, InboxItemUpsert
from .schemas.notification import MessageAudience, MessageNotification, TargetId

if TYPE_CHECKING:  # celery is an optional dependency, imported by the celery queue only
    from .api.ratelimit import ClientLimiter
    from .celery_queue import CeleryQueue
    from .realtime import Realtime

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class _PushState:
    """What one app's ``init_app`` set up; kept in ``app.extensions["push"]``."""

    push: Push
    settings: PushSettings
    #: one provider per configured kind, used only for ``check()`` at send time
    checkers: dict[str, Provider] | None = None
    #: sends the deliveries of ``inline`` sends, and those of ``push.dispatch_due()``
    dispatcher: Dispatcher | None = None
    worker: ThreadWorker | None = None
    #: the ``celery`` queue's Celery app and task, made on first use
    celery: CeleryQueue | None = None
    #: live events: the backplane and this process's websockets, made on first use
    realtime: Realtime | None = None
    #: counts ``POST /subscriptions`` per client when the host has no Flask-Limiter
    subscribe_limiter: ClientLimiter | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def shutdown(self) -> None:
        """Stop this app's worker thread and close its dispatchers' and broker's
        connections.

        A later send starts them again.
        """
        with self.lock:
            worker, self.worker = self.worker, None
            dispatcher, self.dispatcher = self.dispatcher, None
            celery, self.celery = self.celery, None
            realtime, self.realtime = self.realtime, None
        if worker is not None:
            worker.stop()
        if dispatcher is not None:
            dispatcher.close()
        if celery is not None:
            celery.close()
        if realtime is not None:
            realtime.close()


class Push:
    """Push notifications, an inbox and live events for a Flask app.

    ::

        db = SQLAlchemy()
        push = Push(db=db)

        def create_app():
            app = Flask(__name__)
            db.init_app(app)
            push.init_app(app)
            return app

    :param app: an app to set up now; otherwise call :meth:`init_app` later.
    :param db: the host's Flask-SQLAlchemy instance; flask-push's ``push_*``
        tables are defined on it.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask | None = None, *, db: SQLAlchemy) -> None:
        self.db = db
        #: the model classes (``Subscription``, ``Installation``, ``InboxItem``, ``Provider``)
        self.models: Models = models_for(db)
        self._identity_loader: Callable[[], Any] = lambda: None
        self._admin_loader: Callable[[], bool] = lambda: False
        self._channel_authorizer: Callable[[str | None, str], bool] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check the ``PUSH_*`` config and register the API and CLI on ``app``.

        :raises PushConfigError: when a key is missing or wrong.
        :raises RuntimeError: when ``app`` already has flask-push.
        """
        if "push" in app.extensions:
            raise RuntimeError(
                "flask-push is already registered on this app. Call init_app once per app; "
                "to use one Push with several apps, call push.init_app(app) for each."
            )
        if "sqlalchemy" not in app.extensions or app.extensions["sqlalchemy"] is not self.db:
            raise RuntimeError(
                "The db given to Push(db=...) is not registered on this app. "
                "Call db.init_app(app) before push.init_app(app)."
            )
        settings = config.load(app)
        from .api import create_blueprint
        from .cli import push_cli

        app.extensions["push"] = _PushState(push=self, settings=settings)
        from .realtime import inbox_events, ws

        blueprint = create_blueprint(settings)
        ws.register(blueprint)  # <prefix>/ws
        inbox_events.connect()
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
        app.register_blueprint(sw.create_blueprint(settings))  # the service worker
        app.cli.add_command(push_cli)

    # -- callbacks -----------------------------------------------------------

    def identity_loader(self, callback: F) -> F:
        """Register ``callback() -> str | None``: the id of the current request's user."""
        self._identity_loader = callback
        return callback

    def admin_loader(self, callback: F) -> F:
        """Register ``callback() -> bool``: may this request use the admin endpoints?

        Without one, nobody is an admin.
        """
        self._admin_loader = callback
        return callback

    def channel_authorizer(self, callback: F) -> F:
        """Register ``callback(user_id, channel) -> bool``: may this user join this channel?

        Without one, users may join only their own ``user:<id>`` channel.
        """
        self._channel_authorizer = callback
        return callback

    def current_user_id(self) -> str | None:
        """The current request's user id, as ``identity_loader`` says, or None."""
        user_id = self._identity_loader()
        return None if user_id is None else str(user_id)

    def current_user_is_admin(self) -> bool:
        return bool(self._admin_loader())

    def may_join(self, user_id: str | None, channel: str) -> bool:
        """Does ``channel_authorizer`` (or, without one, the own-channel rule) let
        ``user_id`` (None: an anonymous socket) join ``channel``?"""
        if self._channel_authorizer is None:
            return user_id is not None and channel == f"user:{user_id}"
        return bool(self._channel_authorizer(user_id, channel))

    def join_refusal(self, channel: str) -> str:
        """What a socket refused ``channel`` is told: without a ``channel_authorizer``,
        that the app must register one for channels other than the user's own."""
        if self._channel_authorizer is None:
            return (
                f"You may not join {channel!r}: a socket joins only its own user:<id> "
                "channel unless the app registers @push.channel_authorizer to allow others."
            )
        return f"You may not join {channel!r}: the app's channel_authorizer said no."

    # -- per-app state ---------------------------------------------------------

    @property
    def state(self) -> _PushState:
        """The current app's state; needs an app context."""
        try:
            state = current_app.extensions["push"]
        except KeyError:
            raise RuntimeError(
                "flask-push is not set up on the current app. Did you call push.init_app(app)?"
            ) from None
        if state.push is not self:
            raise RuntimeError("The current app was set up with a different Push instance.")
        return state  # type: ignore[no-any-return]

    @property
    def settings(self) -> PushSettings:
        """The current app's checked ``PUSH_*`` configuration."""
        return self.state.settings

    # -- sending -----------------------------------------------------------------

    def send(
        self,
        *,
        users: Iterable[str] | None = None,
        topic: str | None = None,
        query: dict[str, Any] | None = None,
        everyone: bool = False,
        title: str,
        body: str | None = None,
        url: str | None = None,
        icon: str | None = None,
        image: str | None = None,
        badge: int | str | None = None,
        sound: str | None = None,
        tag: str | None = None,
        data: dict[str, Any] | None = None,
        ttl: int | None = None,
        urgency: str = "normal",
        collapse_key: str | None = None,
        send_at: datetime | None = None,
        idempotency_key: str | None = None,
        inbox: bool = False,
        notify_type: str | None = None,
    ) -> Any:
        """Queue a notification for exactly one audience; returns the ``Message``.

        The message and one delivery row per active subscription and installation
        of the audience are committed in one transaction (with ``inbox=True``, an
        inbox item per user too, its id the message's id). Delivery happens in
        the queue's workers; only the ``inline`` queue sends before returning.

        :param users: user ids; their subscriptions and installations.
        :param topic: subscriptions and installations subscribed to this topic.
        :param query: LoopBack's ``notifyByQuery``: ``eq``, ``neq``, ``inq`` and
            ``nin`` over ``userId``, ``deviceType``, ``appId`` and ``appVersion``.
            Browsers match only a query on ``userId`` alone.
        :param everyone: every active subscription and installation.
        :param ttl: seconds the push services keep it; ``PUSH_DEFAULT_TTL`` by default.
            A delivery not sent within its ttl becomes ``expired``.
        :param send_at: a timezone-aware time to send at, or None for now.
        :param idempotency_key: a second send with the same key returns the first
            message and queues nothing.
        :raises ValidationError: for a bad value or not exactly one audience.
        :raises PayloadError: when a configured platform would refuse the
            notification (too large, say); nothing is written.

        .. versionadded:: 0.1
        """
        # ``everyone`` is a Python keyword, not a wire field: False means "not this audience"
        if not isinstance(everyone, bool):
            raise ValidationError("must be true or false", field="everyone", code="invalid_type")
        if isinstance(users, (list, tuple, set, frozenset)):
            users = list(users)
        given = {"users": users, "topic": topic, "query": query, "everyone": everyone or None}
        audience = parse(
            MessageAudience,
            {name: value for name, value in given.items() if value is not None},
            self._context(),
            name="audience",
        )
        notification = {
            "title": title,
            "body": body,
            "url": url,
            "icon": icon,
            "image": image,
            "badge": badge,
            "sound": sound,
            "tag": tag,
            "data": data,
            "ttl": ttl,
            "urgency": urgency,
            "collapse_key": collapse_key,
            "send_at": send_at,
            "idempotency_key": idempotency_key,
            "inbox": inbox,
            "notify_type": notify_type,
        }
        return self._send(audience.keywords(), notification)

    def notify_by_id(self, id: str, **notification: Any) -> Any:
        """:meth:`send` to one subscription or installation, by its id.

        ``notification`` takes :meth:`send`'s keywords other than the audience.

        A dead one is resolved like any audience: the message has no recipients.

        :raises ValidationError: when no subscription or installation has this id.
        """
        target_id = str(check(TargetId, id, "id"))
        models = self.models
        session = self.db.session
        found = session.scalar(
            sa.select(sa.func.count())
            .select_from(models.Subscription)
            .where(models.Subscription.id == target_id)
        ) or session.scalar(
            sa.select(sa.func.count())
            .select_from(models.Installation)
            .where(models.Installation.id == target_id)
        )
        if not found:
            raise ValidationError(
                "is not the id of a subscription or installation", field="id", code="not_found"
            )
        unknown = set(notification) - set(MessageNotification.model_fields)
        if unknown:
            raise TypeError(f"notify_by_id() got unexpected keywords: {', '.join(sorted(unknown))}")
        return self._send({"id": target_id}, notification)

    def _context(self) -> Context:
        return Context.of(self.settings)

    def _send(self, audience: dict[str, Any], keywords: dict[str, Any]) -> Any:
        state = self.state
        settings = state.settings
        given = parse(
            MessageNotification, by_alias(MessageNotification, keywords), Context.of(settings)
        )
        shown = given.shown(settings.default_ttl)
        notification = sending.notification_from_json(shown)
        for checker in self._checkers(state).values():
            checker.check(notification)

        models, session = self.models, self.db.session
        key, send_at, notify_type = given.idempotency_key, given.send_at, given.notify_type
        if key is not None:
            existing = self._by_idempotency_key(key)
            if existing is not None:
                return existing
        now = utcnow()
        due = send_at if send_at is not None and send_at > now else now
        items: list[Any] = []
        try:
            targets = sending.resolve(session, models, audience)
            message = models.Message(
                id=new_id("msg"),
                audience=audience,
                notification=shown,
                notify_type=notify_type,
                inbox=given.inbox,
                recipient_count=len(targets),
                idempotency_key=key,
                send_at=send_at,
                created_at=now,
                clicked=0,
            )
            session.add(message)
            session.flush()
            sending.insert_deliveries(
                session,
                models.Delivery,
                message.id,
                targets,
                settings.providers,
                due_at=due,
                ttl=shown["ttl"],
            )
            if given.inbox:
                fields = sending.inbox_values(shown, notify_type)
                for user_id in sending.inbox_users(audience, targets):
                    items.append(
                        inbox.upsert(session, models, user_id=user_id, id=message.id, values=fields)
                    )
            session.commit()
            # loaded now, so the returned message reads fine after the app context ends
            session.refresh(message)
        except sa.exc.IntegrityError:
            session.rollback()
            # Another send with the same key committed first: it is the message.
            existing = self._by_idempotency_key(key) if key is not None else None
            if existing is None:
                raise
            return existing
        except BaseException:
            session.rollback()
            raise
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        # Committed: a receiver that fails is logged, and the message is still sent.
        for item, created in items:
            signals.send_committed(signals.inbox_item_saved, app, item=item, created=created)
        signals.send_committed(signals.message_queued, app, message=message)
        # Suppressed sends (tests) are recorded at once, as Flask-Mail records
        # mail: ``with push.record() as outbox: push.send(...)`` needs no waiting.
        if settings.queue == "inline" or settings.suppress_send:
            self._dispatcher(state).run_until_idle(message_id=message.id)
        elif settings.queue == "celery":
            # A scheduled message gets no task: the workers' sweep sends it when due.
            if due <= now:
                self._celery(state).enqueue(
                    message.id, message.recipient_count, settings.delivery_batch
                )
        else:
            self._worker(state).wake()
        return message

    def _by_idempotency_key(self, key: str) -> Any:
        model = self.models.Message
        return self.db.session.scalar(sa.select(model).where(model.idempotency_key == key))

    def dispatch_due(self, *, message_id: str | None = None) -> int:
        """Deliver every delivery that is due now (of ``message_id`` only, when
        given) in this thread; returns how many were claimed. Workers do this by
        themselves; scripts, commands and tests may call it."""
        return self._dispatcher(self.state).run_until_idle(message_id=message_id)

    def _checkers(self, state: _PushState) -> dict[str, Provider]:
        with state.lock:
            if state.checkers is None:
                state.checkers = {
                    kind: provider_class(kind).from_settings(options)
                    for kind, options in state.settings.providers.items()
                }
            return state.checkers

    def _dispatcher(self, state: _PushState) -> Dispatcher:
        with state.lock:
            if state.dispatcher is None or state.dispatcher.closed:
                state.dispatcher = self._make_dispatcher()
            return state.dispatcher

    def _make_dispatcher(self) -> Dispatcher:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        return Dispatcher(app, self.models, self.db.engine, app.extensions["push"].settings)

    def _worker(self, state: _PushState) -> ThreadWorker:
        with state.lock:
            worker = state.worker
            # A forked child inherits the object but not the thread: start its own.
            if worker is None or worker.pid != os.getpid() or not worker.alive:
                app = current_app._get_current_object()  # type: ignore[attr-defined]
                worker = state.worker = ThreadWorker(app, self._make_dispatcher).start()
            return worker

    def _celery(self, state: _PushState) -> CeleryQueue:
        with state.lock:
            if state.celery is None:
                from .celery_queue import CeleryQueue

                app = current_app._get_current_object()  # type: ignore[attr-defined]
                state.celery = CeleryQueue(app, state.settings, self._make_dispatcher)
            return state.celery

    def shutdown(self) -> None:
        """Stop the current app's delivery worker and close its connections.

        Deliveries still queued stay in the database for the next worker.
        """
        self.state.shutdown()

    def _realtime(self, state: _PushState) -> Realtime:
        with state.lock:
            realtime = state.realtime
            # A forked child inherits the object but not its subscriber thread.
            if realtime is None or realtime.pid != os.getpid():
                from .realtime import Realtime

                realtime = state.realtime = Realtime(state.settings)
            return realtime

    # -- live events -------------------------------------------------------------

    def publish(self, channel: str, event: str, data: Any = None) -> int:
        """Send a live event to every websocket joined to ``channel``, in every
        process sharing the backplane; returns the event's id in the channel.

        Works wherever an app context is: requests, worker threads, the CLI.
        The event is kept for a while (``PUSH_EVENTS_KEEP_SECONDS``, at most
        ``PUSH_EVENTS_KEEP_COUNT`` per channel) for clients that reconnect.

        :param data: anything JSON can encode.
        :raises ValidationError: for a channel or event name that is empty, too
            long (over 200) or holds whitespace or lone surrogates, or for ``data``
            that is not plain JSON (NaN, a set) or that UTF-8 cannot encode (a lone
            surrogate): no websocket text frame could carry it. Nothing is kept.
        :raises BackplaneError: when the backplane (Redis) cannot be reached.

        .. versionadded:: 0.1
        """
        return self._realtime(self.state).publish(channel, event, data).id

    @contextmanager
    def record(self) -> Iterator[list[OutgoingPush]]:
        """Collect what would have been sent while sending is suppressed::

            with push.record() as outbox:
                push.send(users=["alice"], title="Hi")
            assert outbox[0].notification.title == "Hi"

        Sends are suppressed when ``PUSH_SUPPRESS_SEND`` is true (by default when
        ``app.testing``): they are delivered at once, to an in-memory provider, so
        the deliveries, counts and signals are as real.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        outbox: list[OutgoingPush] = []

        def collect(sender: Any, push: OutgoingPush, **extra: Any) -> None:
            outbox.append(push)

        with signals.push_recorded.connected_to(collect, sender=app):
            yield outbox

    # -- inbox -----------------------------------------------------------------

    def upsert(
        self,
        user_id: str,
        id: str | None = None,
        *,
        notify_type: str | None = None,
        title: str | None = None,
        body: str | None = None,
        url: str | None = None,
        data: dict[str, Any] | None = None,
        progress: dict[str, Any] | None = None,
        is_new: bool | None = None,
        commit: bool = True,
    ) -> Any:
        """Create an inbox item for ``user_id``, or update the one with ``id``.

        On update only the arguments given (not None) change. A progress item is
        one whose ``progress`` (``{"total", "processed"}``) is updated in place.

        :param commit: commit the session (the default); pass False to commit the
            item with your own changes, in one transaction.
        :raises ValidationError: when a value is refused; nothing is written.
        """
        owner = str(check(UserId, user_id, "userId"))
        keywords = {
            "id": id,
            "notify_type": notify_type,
            "title": title,
            "body": body,
            "url": url,
            "data": data,
            "progress": progress,
            "is_new": is_new,
        }
        given = parse(InboxItemUpsert, by_alias(InboxItemUpsert, keywords), self._context())
        return self._upsert(given.model_copy(update={"user_id": owner}), commit)[0]

    def _upsert(self, given: InboxItemUpsert, commit: bool = True) -> tuple[Any, bool]:
        """:meth:`upsert` of checked values (``user_id`` set), saying whether the item
        was created."""
        item, created = self._write(
            lambda: inbox.upsert(
                self.db.session,
                self.models,
                user_id=str(given.user_id),
                id=given.id,
                values=given.columns(),
            ),
            commit,
        )
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if commit:
            signals.send_committed(signals.inbox_item_saved, app, item=item, created=created)
        else:
            self._publish_on_commit(
                app, str(item.user_id), InboxItem.model_validate(item).to_json()
            )
        return item, created

    def search(
        self,
        user_id: str,
        only_new: bool = False,
        types: Iterable[str] | None = None,
        skip: int = 0,
        take: int = DEFAULT_TAKE,
    ) -> inbox.SearchResult:
        """One page of ``user_id``'s inbox, newest first, with its counts."""
        return inbox.search(
            self.db.session,
            self.models,
            user_id,
            only_new=only_new,
            types=types,
            skip=skip,
            take=take,
        )

    def mark_all_read(self, user_id: str, *, commit: bool = True) -> int:
        """Mark every item of ``user_id`` read; returns how many were unread."""
        return self.mark_read(user_id, None, commit=commit)

    def mark_read(self, user_id: str, id: str | None, *, commit: bool = True) -> int:
        """Mark the item ``id`` of ``user_id`` read (every item when ``id`` is None);
        returns how many were unread."""
        count: int = self._write(
            lambda: inbox.mark_read(self.db.session, self.models, user_id, id), commit
        )
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if commit:
            if count:
                signals.send_committed(signals.inbox_read, app, user_id=str(user_id), count=count)
        elif count:
            self._publish_on_commit(app, str(user_id), None)
        return count

    def _publish_on_commit(self, app: Flask, user_id: str, item: dict[str, Any] | None) -> None:
        """The live ``notification``/``unread`` events of a ``commit=False`` change,
        published when the caller commits (the item as it is now)."""
        from .realtime import inbox_events

        inbox_events.on_commit(
            self.db.session, lambda: inbox_events.publish_item(app, user_id, item)
        )

    def _write(self, work: Callable[[], Any], commit: bool) -> Any:
        """Run ``work`` in the session and commit; on failure roll back, so nothing is
        half-written. With ``commit=False`` the caller owns the transaction."""
        if not commit:
            return work()
        session = self.db.session
        try:
            result = work()
            session.commit()
            return result
        except BaseException:
            session.rollback()
            raise
