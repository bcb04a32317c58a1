"""The route table: each operation of the API once, with what the document says of it.

Each resource module declares its operations on their handlers
(``@ROUTES("GET", "/providers/<id>", ...)``); :func:`register` adds them to the
blueprint and :mod:`flask_push.api.openapi` writes the document from the same
table, with the request and response models each operation names. An operation
cannot be served without being documented, nor documented without being served.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Blueprint

F = TypeVar("F", bound=Callable[..., Any])

#: who may call an operation, in the words the document uses
ANYONE = "Anyone."
USER = "Needs a signed-in user (401 otherwise)."
OWNER = "Needs a signed-in user; only the owner, or an administrator, sees the row."
ADMIN = "Administrators only (403 otherwise)."


@dataclass(frozen=True)
class Answer:
    """One documented response: a sentence, the body's model (None: no body; a mapping:
    media type -> schema, for what is not JSON), and the operations the body's ``id``
    may be passed to."""

    description: str
    model: Any = None
    links: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    """One operation: its URL rule (Flask's syntax) and handler, and its documentation.

    ``body`` and ``query`` are the models the handler parses; ``answers`` maps each
    status that is not an error to its :class:`Answer`; ``errors`` are the error
    statuses it may answer besides those every body brings (400, 413, 415). ``view``
    is None for what the blueprint serves by itself (its static files).
    """

    method: str
    rule: str
    view: Callable[..., Any] | None
    operation_id: str
    summary: str
    tag: str
    who: str
    answers: Mapping[int, Answer]
    errors: tuple[int, ...] = ()
    body: Any = None
    query: Any = None
    #: what the ``{id}`` in the path is, and the pattern it has
    id_description: str | None = None
    id_pattern: str | None = None
    #: other parameters, as OpenAPI writes them
    parameters: tuple[Mapping[str, Any], ...] = field(default=())


class Routes:
    """The operations of one resource (one ``tag`` of the document).

    Called with an operation's description, it is a decorator that declares the
    handler it decorates; ``who`` is the default of its operations.
    """

    def __init__(self, tag: str, *, who: str = "") -> None:
        self.tag, self.who = tag, who
        self.routes: list[Route] = []

    def __call__(
        self,
        method: str,
        rule: str,
        operation_id: str,
        summary: str,
        *,
        answers: Mapping[int, Answer],
        who: str | None = None,
        **details: Any,
    ) -> Callable[[F], F]:
        def declare(view: F) -> F:
            self.add(method, rule, view, operation_id, summary, answers=answers, who=who, **details)
            return view

        return declare

    def add(
        self,
        method: str,
        rule: str,
        view: Callable[..., Any] | None,
        operation_id: str,
        summary: str,
        *,
        answers: Mapping[int, Answer],
        who: str | None = None,
        **details: Any,
    ) -> None:
        """Declare an operation without the decorator (``view`` None: served by the
        blueprint itself)."""
        self.routes.append(
            Route(
                method,
                rule,
                view,
                operation_id,
                summary,
                self.tag,
                self.who if who is None else who,
                answers,
                **details,
            )
        )


def table() -> tuple[Route, ...]:
    """Every operation of the API, in the document's order."""
    # imported here: each of them imports this module
    from . import (
        installations,
        messages,
        meta,
        notifications,
        operations,
        preferences,
        providers,
        subscriptions,
        users,
    )

    modules = (
        meta,
        subscriptions,
        installations,
        notifications,
        preferences,
        messages,
        providers,
        users,
        operations,
    )
    return tuple(route for module in modules for route in module.ROUTES.routes)


#: the tags of the operations that probes, scrapers and caches read (health, metrics,
#: the VAPID key, this document): they add parameters of their own (``?probe=``,
#: ``?name[]=``, ``?v=``), which change nothing these answer, so they are ignored
READ_BY_MACHINES = ("meta", "operations")


def register(bp: Blueprint, routes: Iterable[Route]) -> None:
    """Add the operations that have a handler to ``bp`` (endpoint names are the handlers')."""
    for route in routes:
        if route.view is not None:
            keeps = route.query is not None or route.tag in READ_BY_MACHINES
            view = route.view if keeps else _taking_no_query(route.view)
            # merge_slashes off: Werkzeug would redirect an empty id
            # (``/messages//deliveries``) to another operation (``/messages/deliveries``,
            # the message "deliveries") with an HTML page; an exact path or a JSON 404
            bp.add_url_rule(route.rule, view_func=view, methods=[route.method], merge_slashes=False)


def _taking_no_query(view: F) -> F:
    """``view``, refusing any query parameter, since its operation reads none (those
    that read one refuse what their model lacks as they parse it)."""
    from .http import refuse_unknown_query

    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        refuse_unknown_query()
        return view(*args, **kwargs)

    return typing.cast(F, checked)
