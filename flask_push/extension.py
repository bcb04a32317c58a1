"""The :class:`Push` extension object and its per-app state."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy

from . import (
    activities,
    app_providers,
    config,
    inbox,
    operations,
    preferences,
    sending,
    signals,
    sw,
)
from .config import PushSettings
from .database import explains_missing_tables
from .dispatch import Dispatcher
from .errors import PushConfigError
from .message import OutgoingPush
from .models import Models, models_for
from .outbox_state import OutboxState, outbox_state
from .preferences import Preferences
from .providers import Provider, kinds, provider_class
from .queues import InlineQueue, Queue, ThreadWorker
from .realtime.events import user_channel
from .schemas.base import Context
from .schemas.errors import by_alias, check, parse
from .schemas.fields import DEFAULT_TAKE, UserId
from .schemas.inbox import InboxItemUpsert
from .schemas.preferences import PreferencesUpdate
from .schemas.preferences import QuietHours as QuietHoursIn
from .targets import DEFAULT_RECENT

if TYPE_CHECKING:  # celery is an optional dependency, imported by the celery queue only
    from .api.ratelimit import ClientLimiter
    from .celery_queue import CeleryQueue
    from .metrics import Metrics
    from .realtime import Realtime

logger = logging.getLogger("flask_push")


def _listed(users: Any) -> Any:
    """``users`` as a list when it is an iterable of ids (a generator, a dict's keys),
    as its annotation promises; a string, a mapping or None as given, for the
    checks to refuse or take."""
    if users is None or isinstance(users, (str, bytes, Mapping)):
        return users
    try:
        return list(users)
    except TypeError:
        return users  # not iterable: the checks say what it should be


def _no_identity_loader() -> None:
    """The identity of every request before ``@push.identity_loader``: nobody."""
    return None


F = TypeVar("F", bound=Callable[..., Any])


#: flask-push's blueprints, which need no host's CSRF token: the API takes only JSON
#: (which a cross-site form cannot send, and a cross-site script only after a CORS
#: preflight), the console checks a token of its own, and the service worker's is GET
_OWN_BLUEPRINTS = ("push", "push_console", "push_sw")


def _check_room(app: Flask, settings: PushSettings) -> None:
    """Refuse, before anything is registered, a host whose own blueprint or route
    takes a name or URL flask-push needs: Flask would refuse the blueprint with an
    error about its ``name=`` (which flask-push's callers cannot change) and leave the
    app half set up, and a route would hide the service worker without a word."""
    for name in _OWN_BLUEPRINTS:
        if name == "push_console" and not settings.console:
            continue  # not registered
        if name in app.blueprints:
            raise PushConfigError(
                f"This app already has a blueprint named {name!r}, a name flask-push "
                "registers its own under. Register yours under another name "
                f"(app.register_blueprint(bp, name=...)) or rename it."
            )
    url = settings.service_worker_url
    for rule in app.url_map.iter_rules():
        if rule.rule == url and "GET" in (rule.methods or ()):
            raise PushConfigError(
                f"PUSH_SERVICE_WORKER_URL is {url!r}, and this app already has a route "
                f"there (endpoint {rule.endpoint!r}), which would hide flask-push's "
                "service worker. Set PUSH_SERVICE_WORKER_URL to a free path, or move "
                "your route."
            )


def _exempt_from_csrf(app: Flask) -> None:
    """Exempt flask-push's blueprints from the host's Flask-WTF ``CSRFProtect``, if
    it has one: it would refuse every write of the API and the browser client,
    which cannot send its token."""
    state = app.extensions.get("push")
    exempt = getattr(app.extensions.get("csrf"), "exempt", None)
    # per app: one CSRFProtect may serve many (csrf.init_app in an app factory),
    # each with blueprints of its own
    if state is None or exempt is None or state.csrf_exempt:
        return
    for name in _OWN_BLUEPRINTS:
        if name in app.blueprints:
            exempt(app.blueprints[name])
    state.csrf_exempt = True


@dataclass
class PushState:
    """What one app's ``init_app`` set up; kept in ``app.extensions["push"]``.

    Internal, but not private to this module: the API, the CLI and the websocket
    reach the app's queues and live events through its ``get_*`` methods, which
    make each on first use (again after :meth:`shutdown`, or in a forked child).
    ``push.state`` returns the current app's.
    """

    push: Push
    settings: PushSettings
    #: one provider per configured kind, used only for ``check()`` at send time
    checkers: dict[str, Provider] | None = None
    #: and of the kinds stored for apps (``/providers``): (its row's version, it)
    stored_checkers: dict[tuple[str, str], tuple[Any, Provider | None]] = field(
        default_factory=dict
    )
    #: sends the deliveries of ``inline`` sends, and those of ``push.dispatch_due()``
    inline: InlineQueue | None = None
    worker: ThreadWorker | None = None
    #: a request could not start the worker thread (said once)
    worker_refused: bool = False
    #: a request answered 401 for want of an ``identity_loader`` (said once)
    told_no_identity_loader: bool = False
    #: flask-push's blueprints are exempt from the host's CSRFProtect
    csrf_exempt: bool = False
    #: this process sends without a ``SECRET_KEY``, so no click is counted (said once)
    told_no_secret_key: bool = False
    #: the ``celery`` queue's Celery app and task, made on first use
    celery: CeleryQueue | None = None
    #: live events: the backplane and this process's websockets, made on first use
    realtime: Realtime | None = None
    #: counts ``POST /subscriptions`` per client when the host has no Flask-Limiter
    subscribe_limiter: ClientLimiter | None = None
    #: the Prometheus metrics, when ``PUSH_METRICS`` is on
    metrics: Metrics | None = None
    #: the ``PUSH_*`` keys of ``app.config`` as ``init_app`` read them
    config_read: dict[str, Any] = field(default_factory=dict)
    #: ``app.debug`` as ``init_app`` saw it (``PUSH_APNS_SANDBOX``'s default)
    debug_read: bool = False
    #: the thread ``init_app`` ran in (the pytest plugin shuts down a test's own apps)
    made_in: int | None = None
    #: ``app.config`` was compared with ``config_read`` (at the first request or call)
    config_checked: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check_config(self, app: Flask) -> None:
        """Once, at the app's first request or call of the Python API: warn of the
        ``PUSH_*`` keys changed since ``init_app`` read them, which it does not use."""
        if self.config_checked:
            return
        self.config_checked = True
        config.say_changed(self.config_read, app.config)
        if app.debug != self.debug_read:
            config.say_debug_changed(self.settings, self.config_read, app.debug)

    def get_checkers(self) -> dict[str, Provider]:
        """One provider per configured kind, to ``check()`` a notification at send time:
        built with the options the dispatcher's get, so that it measures the payload
        that goes out (declarative Web Push with ``PUSH_SITE_URL``, say)."""
        with self.lock:
            if self.checkers is None:
                self.checkers = {
                    kind: self._checker(kind, options)
                    for kind, options in self.settings.providers.items()
                }
            return self.checkers

    def get_stored_checkers(
        self, session: Any, versions: Mapping[tuple[str, str], Any], keys: Iterable[tuple[str, str]]
    ) -> list[Provider]:
        """One provider per kind of the stored providers ``keys`` (kind, app id) of
        ``versions`` (:func:`~flask_push.app_providers.stored_versions`), to
        ``check()`` a notification at send time as :meth:`get_checkers`' do: the
        check is the kind's, whatever its credentials. (A platform set up only
        through ``/providers`` refused what the send had taken: an FCM data key it
        reserves, a payload over APNs' limit.) Built again when a row changes; one
        that cannot be built is left out (its deliveries say why). Needs an app
        context."""
        checkers: dict[str, Provider] = {}
        for key in sorted(keys):
            if key[0] in checkers or key not in versions:
                continue
            with self.lock:
                known = self.stored_checkers.get(key)
            if known is None or known[0] != versions[key]:
                known = (versions[key], self._stored_checker(session, key))
                with self.lock:
                    self.stored_checkers[key] = known
            if known[1] is not None:
                checkers[key[0]] = known[1]
        return list(checkers.values())

    def _stored_checker(self, session: Any, key: tuple[str, str]) -> Provider | None:
        stored = app_providers.stored_settings(session, self.push.models, key)
        try:
            settings = app_providers.delivery_settings(key[0], stored or {}, current_app.config)
            return self._checker(key[0], settings)
        except Exception:  # noqa: BLE001 - it cannot send either: its deliveries say why
            return None

    def _checker(self, kind: str, settings: Mapping[str, Any]) -> Provider:
        """A provider of ``kind`` with ``settings`` and the options the dispatcher's
        get, for its ``check()``."""
        return provider_class(kind).from_settings(settings, **kinds()[kind].options(self.settings))

    def make_dispatcher(self) -> Dispatcher:
        """A new :class:`Dispatcher` for the current app; needs its app context."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        dispatcher = Dispatcher(
            app, self.push.models, self.push.db.engine, self.settings, metrics=self.metrics
        )
        if not dispatcher.signs_clicks and not self.settings.suppresses_send(app):
            with self.lock:
                told, self.told_no_secret_key = self.told_no_secret_key, True
            if not told:
                logger.warning(
                    "flask-push: this app has no SECRET_KEY, so the notifications this "
                    "process sends carry no click token and no click on them is counted "
                    "(clicked stays 0). Set SECRET_KEY: the same in every process that "
                    "sends and in the web app, which checks the tokens."
                )
        return dispatcher

    def get_queue(self) -> Queue:
        """The queue sends hand their messages to: the inline one when sends are
        suppressed (tests record them at once, as Flask-Mail records mail), else
        the one ``PUSH_QUEUE`` names."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if self.settings.queue == "inline" or self.settings.suppresses_send(app):
            return self.get_inline()
        if self.settings.queue == "celery":
            return self.get_celery()
        return self.get_worker()

    def get_inline(self) -> InlineQueue:
        """The queue that delivers in the calling thread (``inline`` sends,
        ``push.dispatch_due()``, ``flask push worker`` without Celery)."""
        with self.lock:
            if self.inline is None:
                self.inline = InlineQueue(self.make_dispatcher)
            return self.inline

    def get_worker(self, yield_to: Callable[[], bool] | None = None) -> ThreadWorker:
        """This process's worker thread, started if it is not running (with
        ``yield_to``, when this call starts it: see :class:`ThreadWorker`)."""
        with self.lock:
            worker = self.worker
            # A forked child inherits the object but not the thread: start its own.
            if worker is None or worker.pid != os.getpid() or not worker.alive:
                app = current_app._get_current_object()  # type: ignore[attr-defined]
                worker = self.worker = ThreadWorker(app, self.make_dispatcher, yield_to)
                worker.start()
            return worker

    def deliver_here(self) -> None:
        """Before each request (with the ``thread`` queue, sending not suppressed): a
        process that serves requests runs its worker thread, whether or not it sends
        itself. Else what is due without a send here would wait for the next one:
        messages scheduled before a restart, retries, sends of scripts and of
        ``flask push send --no-wait``."""
        worker = self.worker
        if worker is not None and worker.pid == os.getpid() and worker.alive:
            return  # the usual case: one look, no lock
        if self.settings.suppresses_send(current_app):  # a test app set TESTING after init_app
            return
        try:
            self.get_worker()
        except RuntimeError as err:  # no thread to be had: serve the request anyway
            if not self.worker_refused:
                self.worker_refused = True
                logger.warning(
                    "flask-push: this process could not start its worker thread (%s); "
                    "what is due is delivered by the next send or another process",
                    err,
                )

    def get_celery(self) -> CeleryQueue:
        """The ``celery`` queue's Celery app and task; imports Celery."""
        with self.lock:
            if self.celery is None:
                from .celery_queue import CeleryQueue  # celery is an optional dependency

                app = current_app._get_current_object()  # type: ignore[attr-defined]
                self.celery = CeleryQueue(app, self.settings, self.make_dispatcher)
            return self.celery

    def get_realtime(self) -> Realtime:
        """Live events: the backplane and this process's websockets."""
        with self.lock:
            realtime = self.realtime
            # A forked child inherits the object but not its subscriber thread.
            if realtime is None or realtime.pid != os.getpid():
                from .realtime import Realtime

                realtime = self.realtime = Realtime(self.settings)
            return realtime

    def ws_connections(self) -> int:
        """This process's open websockets (joined to a channel)."""
        realtime = self.realtime
        return realtime.hub.count() if realtime is not None else 0

    def shutdown(self) -> None:
        """Stop this app's worker thread and close its dispatchers' and broker's
        connections.

        A later send starts them again, and so does a request with the ``thread``
        queue (see :meth:`deliver_here`).
        """
        with self.lock:
            worker, self.worker = self.worker, None
            inline, self.inline = self.inline, None
            celery, self.celery = self.celery, None
            realtime, self.realtime = self.realtime, None
        queues: list[Queue | None] = [worker, inline, celery]
        for queue in queues:
            if queue is not None:
                queue.shutdown()
        if realtime is not None:
            realtime.close()


#: the name of older code and of the style guide
_PushState = PushState

#: every app's state, by the order init_app made them (for the pytest plugin)
_MADE: weakref.WeakValueDictionary[int, PushState] = weakref.WeakValueDictionary()
_SERIALS = itertools.count()


def made_so_far() -> int:
    """A mark of the apps' states made until now, for :func:`made_since`."""
    return max(_MADE, default=-1)


def made_since(mark: int, thread: int | None = None) -> list[PushState]:
    """The states of the apps that ``init_app`` set up since :func:`made_so_far`
    said ``mark`` (those still alive); in the thread ``thread`` only, when given."""
    return [
        state
        for serial, state in sorted(_MADE.items())
        if serial > mark and (thread is None or state.made_in == thread)
    ]


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
        self._identity_loader: Callable[[], Any] = _no_identity_loader
        self._admin_loader: Callable[[], bool] = lambda: False
        self._channel_authorizer: Callable[[str | None, str], bool] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check the ``PUSH_*`` config and register the API and CLI on ``app``.

        :raises PushConfigError: when a key is missing or wrong, or a blueprint or route
            of the app's own takes a name or URL flask-push needs.
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
        _check_room(app, settings)
        from .api import create_blueprint
        from .cli import push_cli

        state = app.extensions["push"] = PushState(
            push=self,
            settings=settings,
            config_read=config.push_keys(app.config),
            debug_read=app.debug,
            made_in=threading.get_ident(),
        )
        _MADE[next(_SERIALS)] = state
        if settings.metrics:
            from .health import read_outbox
            from .metrics import Metrics  # prometheus_client is an optional dependency

            state.metrics = Metrics(lambda: read_outbox(self), state.ws_connections)
        from .realtime import inbox_events, ws

        blueprint = create_blueprint(settings)
        ws.register(blueprint)  # <prefix>/ws
        inbox_events.connect()
        if settings.console:
            from . import console

            # before the API's blueprint, so that its routing errors under the console
            # (a wrong method) are hidden from non-admins before the API answers them
            app.register_blueprint(
                console.create_blueprint(settings), url_prefix=settings.url_prefix + "/console"
            )
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
        app.register_blueprint(sw.create_blueprint(settings))  # the service worker
        _exempt_from_csrf(app)  # a CSRFProtect set up before this
        # ... or after: this runs before its check, registered later
        app.before_request(lambda: _exempt_from_csrf(current_app))
        app.before_request(lambda: state.check_config(current_app))
        if settings.queue == "thread" and settings.suppress_send_config is not True:
            app.before_request(state.deliver_here)
        app.cli.add_command(push_cli)
        # ``flask shell`` has the extension as ``push``, as Flask-SQLAlchemy gives ``db``
        # (a processor of the app's own, registered later, may name another)
        app.shell_context_processor(lambda: {"push": self})

    # -- callbacks -----------------------------------------------------------

    def identity_loader(self, callback: F) -> F:
        """Register ``callback() -> str | None``: the id of the current request's user
        (an int, a UUID, any id with a text of its own is taken as that text; None, or
        False, for an anonymous visitor)."""
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
        """The current request's user id, as ``identity_loader`` says, or None.

        ``False`` is an anonymous visitor too (``current_user.is_authenticated and
        current_user.id`` returns it); an id of another type with a text of its own (an
        int, a UUID, an ObjectId) is taken as that text. ``True``, or an object whose
        text would be its repr (a user object returned by mistake), is the loader's bug:
        taken as text, ``False`` made every visitor one user, ``"False"``, who read what
        the others wrote.

        :raises TypeError: for a loader that returns ``True`` or an object without a
            text of its own, naming what it returned.
        """
        user_id: object = self._identity_loader()
        if user_id is None or user_id is False:
            return None
        if isinstance(user_id, str):
            return user_id
        kind = type(user_id)
        if user_id is not True and (
            kind.__str__ is not object.__str__ or kind.__repr__ is not object.__repr__
        ):
            # an int, a UUID, an ObjectId: an id whose text is its own (not "<... at 0x..>")
            return str(user_id)
        raise TypeError(
            f"flask-push: the identity_loader returned {type(user_id).__name__} {user_id!r}: "
            "return the signed-in user's id (a str, an int or a UUID), or None for an "
            "anonymous visitor (current_user.get_id() with Flask-Login)"
        )

    def no_identity_loader(self) -> bool:
        """No ``identity_loader`` is registered: every request is anonymous."""
        return self._identity_loader is _no_identity_loader

    def current_user_is_admin(self) -> bool:
        return bool(self._admin_loader())

    def may_join(self, user_id: str | None, channel: str) -> bool:
        """Does ``channel_authorizer`` (or, without one, the own-channel rule) let
        ``user_id`` (None: an anonymous socket) join ``channel``?"""
        if user_id is not None and activities.follows(self, user_id, channel):
            return True  # an activity's channel, for the users it is shown to
        if self._channel_authorizer is None:
            return user_id is not None and channel == user_channel(user_id)
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
    def state(self) -> PushState:
        """The current app's state; needs an app context."""
        try:
            state = current_app.extensions["push"]
        except KeyError:
            raise RuntimeError(
                "flask-push is not set up on the current app. Did you call push.init_app(app)?"
            ) from None
        if state.push is not self:
            raise RuntimeError("The current app was set up with a different Push instance.")
        if not state.config_checked:
            state.check_config(current_app)
        return state  # type: ignore[no-any-return]

    @property
    def settings(self) -> PushSettings:
        """The current app's checked ``PUSH_*`` configuration."""
        return self.state.settings

    # -- sending -----------------------------------------------------------------

    @explains_missing_tables
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
        category: str | None = None,
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
        :param send_at: a timezone-aware time to send at, or None for now. A
            scheduled message's inbox items are written when it comes due.
        :param idempotency_key: a second send with the same key returns the first
            message and queues nothing.
        :param category: a ``PUSH_CATEGORIES`` id: each user's choices for it decide
            which channels get it (the others are recorded ``suppressed``), pushes
            wait for the end of the user's quiet hours, and its ``max_per_day`` caps
            the pushes a user gets in 24 hours. None: none of these apply.
        :raises ValidationError: for a bad value, an unknown category or not exactly
            one audience.
        :raises PayloadError: when a configured platform would refuse the
            notification (too large, say), or one stored (``/providers``) for the
            app of a device it goes to; nothing is written.

        .. versionadded:: 0.1
        """
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
            "category": category,
        }
        audience = {"users": _listed(users), "topic": topic, "query": query, "everyone": everyone}
        return sending.send(self.state, audience, notification)

    @explains_missing_tables
    def activity(
        self,
        id: str,
        *,
        users: Iterable[str],
        title: str,
        body: str | None = None,
        state: dict[str, Any] | None = None,
        url: str | None = None,
        event: str = "update",
        category: str | None = None,
        stale_at: datetime | None = None,
        dismiss_at: datetime | None = None,
        attributes_type: str | None = None,
        attributes: dict[str, Any] | None = None,
        urgency: str | None = None,
    ) -> Any:
        """Show the new state of the activity ``id`` (an order out for delivery) in
        place on every screen of ``users``; returns the ``Message`` it queued.

        Browsers and Android replace the activity's last notification (its tag and
        collapse key are ``id``); iOS installations that registered a Live Activity
        token for it (``POST /installations/<id>/activities``), or a push-to-start
        token for ``event="start"``, get an APNs Live Activity push, the others an
        alert that replaces the last. One inbox item per user is updated in place
        (``progress`` from the state's ``step`` and ``steps``), an ``activity`` event
        goes to ``user:<id>`` (of each user whose inbox it reaches) and
        ``activity:<id>``, and pushes of older states still queued for the same
        browsers and devices become ``superseded``. The users of the latest call are
        the activity's: only they may join ``activity:<id>``.

        :param event: ``start``, ``update`` or ``end``; after ``end`` the activity
            takes no more calls. A ``start`` run twice (a job retried) sends no second
            push-to-start to a device that had one for this activity (it would start a
            second Live Activity there): that device gets it as an alert.
        :param state: the app's state of it (a Live Activity's ``content-state``);
            when not given, the activity's last state.
        :param category: a ``PUSH_CATEGORIES`` id, as in :meth:`send`.
        :param stale_at: when the state is out of date; ``dismiss_at`` (with
            ``end``): when it leaves the lock screen.
        :param attributes_type: with ``attributes``, for ``start``: the Live
            Activity's type and static attributes, for a push-to-start (which needs
            a ``state``).
        :param urgency: as in :meth:`send` (``normal`` when not given); ``high``
            also sends an ``update`` to a Live Activity at APNs' priority 10 (a
            ``start`` and an ``end`` always go at 10), for news that cannot wait
            (the courier at the door): Apple's budget of those is small.
        :raises ValidationError: a bad value, or an activity that has ended
            (``activity_ended``); nothing is written.

        .. versionadded:: 0.2
        """
        keywords = {
            "id": id,
            "users": _listed(users),
            "title": title,
            "body": body,
            "state": state,
            "url": url,
            "event": event,
            "category": category,
            "stale_at": stale_at,
            "dismiss_at": dismiss_at,
            "attributes_type": attributes_type,
            "attributes": attributes,
            "urgency": urgency,
        }
        return activities.activity(self.state, keywords)

    @explains_missing_tables
    def notify_by_id(self, id: str, **notification: Any) -> Any:
        """:meth:`send` to one subscription or installation, by its id.

        ``notification`` takes :meth:`send`'s keywords other than the audience.

        A dead one is resolved like any audience: the message has no recipients.

        :raises ValidationError: when no subscription or installation has this id.
        """
        return sending.notify_by_id(self.state, id, notification)

    # -- notification policy: what each user lets reach them ------------------------------

    @explains_missing_tables
    def get_preferences(self, user_id: str) -> Preferences:
        """``user_id``'s choices: for each category of ``PUSH_CATEGORIES``, the channels
        they may choose, on or off (``.categories["offers"]["web"]``), and their
        ``.quiet_hours`` (None when they have none). A user who never chose gets the
        categories' defaults.

        .. versionadded:: 0.2
        """
        return preferences.get(self.db.session, self.models, self.settings.categories, user_id)

    @explains_missing_tables
    def set_preferences(
        self,
        user_id: str,
        *,
        categories: Mapping[str, Mapping[str, bool]] | None = None,
        quiet_hours: Mapping[str, str] | preferences.QuietHours | None | EllipsisType = ...,
    ) -> Preferences:
        """Change ``user_id``'s choices and commit; what is not given stays.

        :param categories: category id -> channel (``web``, ``mobile``, ``inbox``) ->
            on or off, such as ``{"offers": {"web": False}}``.
        :param quiet_hours: ``{"start": "22:00", "end": "07:00", "time_zone":
            "Europe/Berlin"}`` (``timeZone`` too), or the ``QuietHours`` that
            :meth:`get_preferences` returns; None removes them.
        :raises ValidationError: an unknown category or channel, a required category
            turned off, a bad time or time zone; nothing changes.

        .. versionadded:: 0.2
        """
        given: dict[str, Any] = {}
        if categories is not None:
            given["categories"] = (
                {
                    id: dict(choices) if isinstance(choices, Mapping) else choices
                    for id, choices in categories.items()
                }
                if isinstance(categories, Mapping)
                else categories
            )
        if isinstance(quiet_hours, preferences.QuietHours):
            quiet_hours = quiet_hours.to_json()
        if quiet_hours is not ...:
            given["quietHours"] = (
                by_alias(QuietHoursIn, quiet_hours)
                if isinstance(quiet_hours, Mapping)
                else quiet_hours
            )
        change = parse(PreferencesUpdate, given, Context.of(self.settings))
        return preferences.update(
            self.db.session,
            self.models,
            self.settings.categories,
            user_id,
            change,
            self.state.metrics,
        )

    @explains_missing_tables
    def dispatch_due(self, *, message_id: str | None = None) -> int:
        """Deliver every delivery that is due now (of ``message_id`` only, when
        given) in this thread; returns how many were claimed. Without
        ``message_id``, the inbox items of scheduled messages that came due are
        written too, before it returns. Workers do this by themselves; scripts,
        commands and tests may call it."""
        return self.state.get_inline().run_once(message_id)

    @explains_missing_tables
    def outbox_state(self) -> OutboxState:
        """The current app's outbox: how many deliveries are due now and how long
        the oldest has waited, read from the database (one index range query).

        .. versionadded:: 0.1
        """
        return outbox_state(self.db.session, self.models)

    # -- operations: why a user did or did not get it ------------------------------------

    @explains_missing_tables
    def explain(
        self,
        message_id: str,
        user_id: str | None = None,
        *,
        status: str | None = None,
        skip: int = 0,
        take: int | None = None,
    ) -> list[dict[str, Any]]:
        """What happened to each delivery of ``message_id`` (of those sent to
        ``user_id`` only, when given, whoever owns their targets now; a delivery to a
        target that was anonymous then is found through its owner now): one entry
        per target with its status, machine ``reason``,
        a ``detail`` sentence and its timeline, as ``GET /messages/<id>/deliveries``
        answers them (camelCase keys), oldest first.

        :raises ValidationError: ``not_found`` for an unknown message; a bad filter.
        """
        return operations.explain_message(
            self.state, message_id, user_id, status=status, skip=skip, take=take
        )

    @explains_missing_tables
    def cancel(self, message_id: str) -> dict[str, Any]:
        """Cancel what of ``message_id`` is not sent yet: its queued deliveries
        become ``cancelled`` (a scheduled message never goes out; one being sent
        stops after the pushes on the network: a worker drops those it holds waiting
        for a slot within about half a second). Returns the message as ``GET
        /messages/<id>`` shows it.

        :raises ValidationError: ``not_found`` for an unknown message.
        """
        return operations.cancel(self.state, message_id)

    @explains_missing_tables
    def retry_failed(self, message_id: str) -> dict[str, Any]:
        """Queue the ``failed`` deliveries of ``message_id`` again, due now (a
        scheduled message's at its ``send_at``, if that is later; ``gone`` ones stay:
        their targets are dead). Returns the message.

        :raises ValidationError: ``not_found`` for an unknown message;
            ``message_cancelled`` for a cancelled one (it has ``cancelled``
            deliveries): none of it goes out again, so nothing is retried (HTTP 409).
        """
        return operations.retry_failed(self.state, message_id)

    @explains_missing_tables
    def user_targets(self, user_id: str, *, recent: int = DEFAULT_RECENT) -> list[dict[str, Any]]:
        """``user_id``'s browsers and devices: kind, a readable label ("Chrome on
        Android", "iOS app 2.0"), active or dead (since when, why), last seen, and
        the ``recent`` latest deliveries of each, as ``GET /users/<id>/targets``
        answers them."""
        return operations.user_targets(self.state, user_id, recent)

    def shutdown(self) -> None:
        """Stop the current app's delivery worker and close its connections.

        Deliveries still queued stay in the database for the next worker.
        """
        self.state.shutdown()

    # -- live events -------------------------------------------------------------

    def publish(self, channel: str, event: str, data: Any = None) -> int:
        """Send a live event to every websocket joined to ``channel``, in every
        process sharing the backplane; returns the event's id in the channel.

        Works wherever an app context is: requests, worker threads, the CLI.
        The event is kept for a while (``PUSH_EVENTS_KEEP_SECONDS``, at most
        ``PUSH_EVENTS_KEEP_COUNT`` per channel) for clients that reconnect.

        :param data: anything JSON can encode.
        :raises ValidationError: for a channel or event name that is empty, too
            long (a channel over 260, an event over 200), for an event name with
            whitespace, for NUL in a channel name, for lone surrogates in either, or
            for ``data``
            that is not plain JSON (NaN, a set) or that UTF-8 cannot encode (a lone
            surrogate): no websocket text frame could carry it. Nothing is kept.
        :raises BackplaneError: when the backplane (Redis) cannot be reached.

        .. versionadded:: 0.1
        """
        return self.state.get_realtime().publish(channel, event, data).id

    @contextmanager
    def record(self) -> Iterator[list[OutgoingPush]]:
        """Collect what would have been sent while sending is suppressed::

            with push.record() as outbox:
                push.send(users=["alice"], title="Hi")
            assert outbox[0].notification.title == "Hi"

        Sends are suppressed when ``PUSH_SUPPRESS_SEND`` is true (unset: while
        ``app.testing``, even if ``TESTING`` was set after ``init_app``): they are
        delivered at once, to an in-memory provider, so the deliveries, counts and
        signals are as real.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        outbox: list[OutgoingPush] = []

        def collect(sender: Any, push: OutgoingPush, **extra: Any) -> None:
            outbox.append(push)

        with signals.push_recorded.connected_to(collect, sender=app):
            yield outbox

    # -- inbox -----------------------------------------------------------------

    @explains_missing_tables
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
        given = parse(
            InboxItemUpsert, by_alias(InboxItemUpsert, keywords), Context.of(self.settings)
        )
        owned = given.model_copy(update={"user_id": owner})
        return inbox.save(self.db.session, self.models, owned, commit=commit)[0]

    @explains_missing_tables
    def search(
        self,
        user_id: str,
        only_new: bool = False,
        types: Iterable[str] | None = None,
        skip: int = 0,
        take: int = DEFAULT_TAKE,
    ) -> inbox.SearchResult:
        """One page of ``user_id``'s inbox, newest first, with its counts (``types``:
        those types alone; a string is one type)."""
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

    @explains_missing_tables
    def mark_read(self, user_id: str, id: str | None, *, commit: bool = True) -> int:
        """Mark the item ``id`` of ``user_id`` read (every item when ``id`` is None);
        returns how many were unread."""
        return inbox.read(self.db.session, self.models, user_id, id, commit=commit)
