"""Answers of the operations routes: ``GET /health``."""

from __future__ import annotations

from typing import Literal

from .base import ResponseModel


class OutboxHealth(ResponseModel):
    """The outbox's backlog, read from the database."""

    due: int
    """Queued deliveries whose time has come, not sent yet."""
    oldest_due_seconds: float | None
    """Seconds the oldest of them has waited; null when none is due."""


class Health(ResponseModel):
    """Whether this process can serve: its database and its backplane answer."""

    status: Literal["ok", "down"]
    """`ok` (200) when everything below answers, `down` (503) otherwise."""
    database: Literal["ok", "down"]
    """Whether the database answered the outbox query."""
    backplane: Literal["ok", "memory", "down"]
    """The live events' backplane: `ok` (Redis answered), `memory` (one process, nothing
    to reach) or `down` (Redis did not answer)."""
    outbox: OutboxHealth | None
    """Null when the database is down."""
    problems: list[str]
    """What is down, in sentences for a person; empty when all is well."""
