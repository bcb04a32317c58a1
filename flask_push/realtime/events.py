"""Live events: what a channel carries, and how a reconnecting client catches up.

Each channel numbers its events 1, 2, 3, ... and a backplane keeps the recent
ones for a while (``PUSH_EVENTS_KEEP_SECONDS``, at most ``PUSH_EVENTS_KEEP_COUNT``),
so a client that reconnects with ``since=<last id it saw>`` misses nothing, or
is told with a ``gap`` that it must reload its state.
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

log = logging.getLogger("flask_push.realtime")

#: channel and event names: no whitespace (they are Redis keys and go into frames),
#: and no lone surrogates, which no UTF-8 text (frame, Redis key) can hold
_NAME = re.compile(r"[^\s\ud800-\udfff]{1,200}")


def channel_name(value: Any, field: str = "channel") -> str:
    """``value`` if it is a usable channel name; else a ValidationError."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValidationError(
            "must be 1-200 characters without whitespace", field=field, code="invalid_value"
        )
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
        """``frame`` as a whole websocket text frame, encoded once for every socket.

        A server's frames are not masked, and ``/ws`` declines per-message
        compression, so the same bytes are right on every connection.
        """
        return bytes(FrameProtocol(client=False, extensions=[]).send_data(self.frame, fin=True))

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
class Replay:
    """What a channel still keeps after some id."""

    #: some events after that id are no longer kept (or the numbering restarted)
    gap: bool
    #: the kept events after that id, oldest first
    events: list[Event]
    #: the channel's latest id (0 when it never had an event)
    last_id: int


def replay(kept: Sequence[Event], last_id: int, since: int) -> Replay:
    """The events of ``kept`` (oldest first) after ``since``, and whether any are missing.

    A ``since`` beyond the channel's latest id means the numbering restarted (a
    server restart with the memory backplane, or Redis keys that expired): the
    client's state is stale, which is a gap too.
    """
    if since >= last_id:
        return Replay(since > last_id, [], last_id)
    after = [event for event in kept if event.id > since]
    return Replay(not after or after[0].id > since + 1, after, last_id)
