"""The categories a host lets its users control (``PUSH_CATEGORIES``), read and
checked once in ``init_app``.

A category's entry says what a user sees (``label``), whether it may be turned
off at all (``required``), what a user who never chose gets (``default``: False
means consent first, as EU marketing needs), which channels the user chooses for
it, and how many pushes of it may reach one user a day (``max_per_day``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, get_args

from annotated_types import Len
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as PydanticError

from . import validation
from .errors import PushConfigError

KEY = "PUSH_CATEGORIES"

#: what a user controls per category: Web Push to browsers, FCM and APNs to the
#: apps' installations, and the inbox item (with its live events)
Channel = Literal["web", "mobile", "inbox"]
CHANNELS: Final[tuple[str, ...]] = get_args(Channel)
#: the channels pushes go through; ``inbox`` is the inbox item
PUSH_CHANNELS: Final[tuple[str, ...]] = ("web", "mobile")
#: the largest daily cap: more than this is no cap at all
MAX_PER_DAY = 1000


class _Entry(BaseModel):
    """One category as ``app.config`` declares it."""

    model_config = ConfigDict(strict=True, extra="forbid")

    label: Annotated[StrictStr, Len(1, 255)]
    required: StrictBool = False
    default: StrictBool = True
    #: None: all of them
    channels: Annotated[list[Channel], Len(1, len(CHANNELS))] | None = None
    max_per_day: Annotated[StrictInt, Field(ge=1, le=MAX_PER_DAY)] | None = None


@dataclass(frozen=True)
class Category:
    """One category of notification a user may control."""

    id: str
    label: str
    #: on for everyone, on every channel: it cannot be turned off
    required: bool
    #: whether a channel is on for a user who never chose (False: off until chosen)
    default: bool
    #: the channels a user chooses for it; the others keep ``default``
    channels: tuple[str, ...]
    #: pushes of it one user may get in 24 hours, or None for no cap
    max_per_day: int | None

    def is_on(self, channel: str, choices: Mapping[str, bool] | None) -> bool:
        """Whether ``channel`` is on for a user who chose ``choices`` for this category."""
        if self.required:
            return True
        if choices is not None and channel in self.channels and channel in choices:
            return bool(choices[channel])
        return self.default


def load(config: Mapping[str, Any]) -> Mapping[str, Category]:
    """The categories of ``config[PUSH_CATEGORIES]`` by id (none when unset)."""
    given = config.get(KEY) or {}
    if not isinstance(given, Mapping):
        raise PushConfigError(
            f"{KEY} must be a dict of category id -> entry, such as "
            "{'offers': {'label': 'Offers and deals', 'max_per_day': 2}}; "
            f"got {type(given).__name__}"
        )
    categories: dict[str, Category] = {}
    for id, entry in given.items():
        if not isinstance(id, str) or not validation.NAME.match(id):
            raise PushConfigError(
                f"{KEY} has the category id {id!r}: ids are 1-64 letters, digits, "
                "'_', '.', ':' or '-'"
            )
        try:
            checked = _Entry.model_validate(entry)
        except PydanticError as err:
            raise PushConfigError(f"{KEY}[{id!r}] {_problem(err)}") from None
        if checked.required and not checked.default:
            raise PushConfigError(
                f"{KEY}[{id!r}] is required, so it is on for everyone: 'default': False "
                "contradicts it; drop one of them"
            )
        chosen: list[str] = list(checked.channels or CHANNELS)
        if len(set(chosen)) != len(chosen):
            raise PushConfigError(f"{KEY}[{id!r}] names a channel twice in 'channels'")
        categories[id] = Category(
            id=id,
            label=checked.label,
            required=checked.required,
            default=checked.default,
            channels=tuple(c for c in CHANNELS if c in chosen),
            max_per_day=checked.max_per_day,
        )
    return categories


def _problem(err: PydanticError) -> str:
    """What is wrong with an entry, in one clause naming its field."""
    error = err.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(_Entry.model_fields))
        return f"has the unknown field {where!r}; an entry has {known}"
    if error["type"] == "model_type":
        return "must be a dict such as {'label': 'Offers and deals'}"
    if error["type"] == "missing":
        return f"needs {where!r}"
    if where.startswith("channels"):
        return f"'channels' must list some of {', '.join(CHANNELS)} ({error['msg']})"
    return f"{where!r}: {error['msg']} (got {error.get('input')!r})"
