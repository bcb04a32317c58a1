"""The :class:`Push` extension object and its per-app state."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy

from . import config, inbox, signals
from .config import PushSettings
from .models import Models, models_for

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class _PushState:
    """What one app's ``init_app`` set up; kept in ``app.extensions["push"]``."""

    push: Push
    settings: PushSettings


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
        self._channel_authorizer: Callable[[str | None, str], bool] = lambda user_id, channel: (
            user_id is not None and channel == f"user:{user_id}"
        )
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
        app.register_blueprint(create_blueprint(settings), url_prefix=settings.url_prefix)
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
        return bool(self._channel_authorizer(user_id, channel))

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
        given = {
            "type": notify_type,
            "title": title,
            "body": body,
            "url": url,
            "data": data,
            "progress": progress,
            "is_new": is_new,
        }
        return self._upsert(user_id, id, given, commit)[0]

    def _upsert(
        self, user_id: str, id: str | None, given: dict[str, Any], commit: bool = True
    ) -> tuple[Any, bool]:
        """:meth:`upsert` that also says whether the item was created."""
        values = {k: v for k, v in given.items() if v is not None}
        item, created = self._write(
            lambda: inbox.upsert(
                self.db.session, self.models, user_id=user_id, id=id, values=values
            ),
            commit,
        )
        if commit:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            signals.inbox_item_saved.send(app, item=item, created=created)
        return item, created

    def search(
        self,
        user_id: str,
        only_new: bool = False,
        types: Iterable[str] | None = None,
        skip: int = 0,
        take: int = inbox.DEFAULT_TAKE,
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
        if commit:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            if count:
                signals.inbox_read.send(app, user_id=str(user_id), count=count)
        return count

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
