"""The route table: each operation of the API once, with what the document says of it.

Every resource module lists its routes; :func:`register` adds them to the
blueprint and :mod:`flask_push.api.openapi` writes the document from the same
list, with the request and response models each route names. A route cannot be
served without being documented, nor documented without being served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint

#: who may call an operation, in the words the document uses
ANYONE = "Anyone."
USER = "Needs a signed-in user (401 otherwise)."
OWNER = "Needs a signed-in user; only the owner, or an administrator, sees the row."
ADMIN = "Administrators only (403 otherwise)."


@dataclass(frozen=True)
class Answer:
    """One documented response: a sentence, the body's model (None: no body), and the
    operations the body's ``id`` may be passed to."""

    description: str
    model: Any = None
    links: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    """One operation: its URL rule (Flask's syntax) and handler, and its documentation.

    ``body`` and ``query`` are the models the handler parses; ``answers`` maps each
    status that is not an error to its :class:`Answer`; ``errors`` are the error
    statuses it may answer besides those every body (400, 413, 415) brings.
    ``view`` is None for a route the blueprint serves by itself (its static files).
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


def table() -> tuple[Route, ...]:
    """Every route of the API, in the document's order."""
    # imported here: each of them imports this module for Route
    from . import installations, messages, meta, notifications, providers, subscriptions

    modules = (meta, subscriptions, installations, notifications, messages, providers)
    return tuple(route for module in modules for route in module.ROUTES)


def register(bp: Blueprint, routes: Iterable[Route]) -> None:
    """Add the routes that have a handler to ``bp`` (endpoint names are the handlers')."""
    for route in routes:
        if route.view is not None:
            bp.add_url_rule(route.rule, view_func=route.view, methods=[route.method])
