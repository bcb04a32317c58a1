"""Live events: what a channel carries, and how a reconnecting client catches up.

Each channel numbers its events one after another, from a first id taken from the
clock (microseconds since 1970) when its numbering starts, and a backplane keeps the
recent ones for a while (``PUSH_EVENTS_KEEP_SECONDS``, at most
``PUSH_EVENTS_KEEP_COUNT``), so a client that reconnects with ``since=<last id it
saw>`` misses nothing, or is told with a ``gap`` that it must reload its state.

A numbering starts anew when its counter is lost: a restarted process (memory
backplane), a Redis that lost its data or let the counter expire. Starting from the
clock, the new ids are still above every id the old numbering gave (one event takes
more than a microsecond), so no client mistakes a new event for one it has seen,
and its ``since`` falls before the kept events: a gap. Ids stay below 2**53, which
JavaScript reads exactly, until the year 2255.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wsproto.frame_protocol import FrameProtocol

from ..errors import ValidationError
from ..schemas.fields import MAX_TEXT

log = logging.getLogger("flask_push.realtime")

#: every user's own channel is this and their id
USER_CHANNEL_PREFIX = "user:"
#: an activity's channel is this and its id: a page showing the activity joins it
ACTIVITY_CHANNEL_PREFIX = "activity:"
#: the longest channel: room for ``user:<id>`` with the longest user id
MAX_CHANNEL = len(USER_CHANNEL_PREFIX) + MAX_TEXT
#: what a channel name may be: any user's own channel is one, whatever their id
#: holds (spaces, say), so only what no user id holds is refused: NUL, and lone
#: surrogates, which no UTF-8 text (frame, Redis key) can hold
CHANNEL_RULE = f"must be 1-{MAX_CHANNEL} characters, without NUL or lone surrogates"
_CHANNEL = re.compile(rf"[^\x00\ud800-\udfff]{{1,{MAX_CHANNEL}}}")
#: the backplane's own channel, which no client can name (channel names hold no
#: NUL): its ``left`` events tell every process which users may no longer follow a
#: channel (an activity's, whose latest call left them out)
LEFT_CHANNEL = "\x00left"
#: event names: words a developer chose, so no whitespace (nor lone surrogates)
EVENT_RULE = "must be 1-200 characters without whitespace"
_EVENT = re.compile(r"[^\s\ud800-\udfff]{1,200}")


def user_channel(user_id: str) -> str:
    """The channel of ``user_id``'s own events: ``user:<id>``."""
    return USER_CHANNEL_PREFIX + user_id


def channel_name(value: Any, field: str = "channel") -> str:
    """``value`` if it is a usable channel name; else a ValidationError."""
    if not isinstance(value, str) or not _CHANNEL.fullmatch(value):
        raise ValidationError(CHANNEL_RULE, field=field, code="invalid_value")
    return value


def event_name(value: Any) -> str:
    """``value`` if it is a usable event name; else a ValidationError."""
    if not isinstance(value, str) or not _EVENT.fullmatch(value):
        raise ValidationError(EVENT_RULE, field="event", code="invalid_value")
    return value


@dataclass(frozen=True)
class Event:
    """One event of one channel; ``frame`` is its websocket text, made once for all
    the connections it goes to."""

    channel: str
    id: int
    event: str
    #: the event's data as JSON text
    data_json: str
    frame: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        frame = (
            f'{{"op":"event","channel":{json.dumps(self.channel)},"id":{self.id},'
            f'"event":{json.dumps(self.event)},"data":{self.data_json}}}'
        )
        object.__setattr__(self, "frame", frame)

    @functools.cached_property
    def wire(self) -> bytes:
        """``frame`` as a whole websocket text frame, encoded once for every socket."""
        return encode_frame(self.frame)

    @property
    def data(self) -> Any:
        return json.loads(self.data_json)


def sendable(event: Event) -> bool:
    """Can ``event`` go out as a text frame?

    ``publish`` refuses data that cannot be encoded as UTF-8, but an event kept
    by an older version, or written into Redis by something else, may still hold
    some: it is skipped with a log line, never let near a socket, where it would
    end the connection, and every reconnect's replay, over and over.
    """
    try:
        event.wire  # noqa: B018 - encodes it, once for every socket
    except UnicodeEncodeError:
        log.error(
            "flask-push: event %d of channel %r is not valid UTF-8 text; not sent",
            event.id,
            event.channel,
        )
        return False
    return True


@dataclass(frozen=True)
class Gap:
    """A ``gap`` frame on its way to the connections of a channel, in order with its
    events: some events were lost, and those that follow are the ones after
    ``resume``. That may be below ids already sent, when the numbering started anew
    lower (a Redis whose clock is behind the old one's)."""

    channel: str
    resume: int

    @property
    def frame(self) -> str:
        return gap_frame(self.channel)

    @functools.cached_property
    def wire(self) -> bytes:
        return encode_frame(self.frame)


@dataclass(frozen=True)
class Notice:
    """A frame for one connection about a channel it has just been made to leave:
    it goes out though the connection is no longer on the channel."""

    channel: str
    frame: str

    @functools.cached_property
    def wire(self) -> bytes:
        return encode_frame(self.frame)


def gap_frame(channel: str) -> str:
    """The websocket text that tells a client to reload what ``channel`` shows."""
    return json.dumps({"op": "gap", "channel": channel})


def encode_frame(frame: str) -> bytes:
    """``frame`` as the bytes of one websocket text frame from the server."""
    # A server's frames are not masked, and ``/ws`` declines per-message
    # compression, so the same bytes are right on every connection.
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(frame, fin=True))


@dataclass(frozen=True)
class Replay:
    """What a channel still keeps after some id."""

    #: some events after that id are no longer kept, or the id is from an earlier
    #: numbering of the channel: the client must reload its state
    gap: bool
    #: the kept events after that id, oldest first
    events: list[Event]
    #: the channel's latest id (0 when it never had an event)
    last_id: int


def replay(kept: Sequence[Event], last_id: int, since: int, *, from_first: bool) -> Replay:
    """The events of ``kept`` (oldest first) after ``since``, and whether any are missing.

    :param from_first: ``kept`` begins with the first event of the channel's
        numbering, so a client that saw none (``since=0``) misses nothing.

    A ``since`` beyond the channel's latest id is from an earlier numbering that
    gave higher ids (a Redis that came back with its clock behind): a gap, then every
    kept event, all of which are new to the client.
    """
    if since > last_id:
        return Replay(True, list(kept), last_id)
    if since == last_id:
        return Replay(False, [], last_id)
    after = [event for event in kept if event.id > since]
    # Complete when the event right after ``since`` is kept (an id from an earlier
    # numbering never has it: the events after it may be lost), or when the client
    # saw none and the numbering's first is kept.
    complete = bool(after) and (after[0].id == since + 1 or (since == 0 and from_first))
    return Replay(not complete, after, last_id)
