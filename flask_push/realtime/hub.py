"""This process's websocket connections, by channel, and their bounded queues.

A broadcast only appends the event to each joined connection's queue and wakes
its handler, which writes from its own loop. A connection whose queue is full
(a client that stopped reading) is dropped, so it never stalls anyone else.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from .events import Event, Gap, sendable

log = logging.getLogger("flask_push.realtime")


class Connection:
    """One websocket's side of the hub: its channels and its queue of events.

    Kept small, as there may be ten thousand per process: slots, and a list for
    the queue (an empty deque takes a block of 64 slots).
    """

    __slots__ = ("wake", "_sock", "max_queue", "queue", "channels", "last_ids", "dropped")

    def __init__(self, wake: Any, sock: socket.socket | None, max_queue: int) -> None:
        #: set when there is something for the handler to do; shared with the
        #: websocket's reader, so one wait covers frames in and events out
        self.wake = wake
        self._sock = sock
        self.max_queue = max_queue
        #: appended to by broadcasters, emptied from the front by the handler only
        self.queue: list[Event | Gap] = []
        self.channels: set[str] = set()
        #: per channel, the last event id sent (or the point a replay starts from);
        #: an event at or below it is a copy of one sent, and is skipped
        self.last_ids: dict[str, int] = {}
        self.dropped = False

    def offer(self, event: Event | Gap) -> None:
        """Queue ``event``; drop the connection when its queue is full. Never blocks."""
        if self.dropped:
            return
        if len(self.queue) >= self.max_queue:
            self.drop()
            return
        self.queue.append(event)
        self.wake.set()

    def drop(self) -> None:
        """Give up on a client that does not keep up.

        The handler may be blocked writing to it, so shut the socket down: its
        write fails at once and it ends.
        """
        self.dropped = True
        self.wake.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def take(self) -> list[Event | Gap]:
        """The queued events and gaps still worth sending, in order."""
        # Take a count, then that many from the front: a broadcaster's append in
        # between lands after them and waits for the next take.
        count = len(self.queue)
        queued = self.queue[:count]
        del self.queue[:count]
        out: list[Event | Gap] = []
        for item in queued:
            channel = item.channel
            if channel not in self.channels:
                continue
            last = self.last_ids.get(channel, 0)
            if isinstance(item, Gap):
                # the events after it may be numbered anew, below those sent
                self.last_ids[channel] = min(last, item.resume)
                out.append(item)
            elif item.id > last:
                self.last_ids[channel] = item.id
                out.append(item)
        return out


class Hub:
    """Channels of this process and the connections joined to them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, set[Connection]] = {}
        #: the last id delivered per channel, where a resync starts from
        self._last_ids: dict[str, int] = {}

    def join(self, connection: Connection, channel: str) -> None:
        with self._lock:
            self._channels.setdefault(channel, set()).add(connection)
        connection.channels.add(channel)

    def leave(self, connection: Connection, channel: str) -> None:
        connection.channels.discard(channel)
        with self._lock:
            joined = self._channels.get(channel)
            if joined is not None:
                joined.discard(connection)
                if not joined:
                    del self._channels[channel]
                    self._last_ids.pop(channel, None)

    def leave_all(self, connection: Connection) -> None:
        for channel in list(connection.channels):
            self.leave(connection, channel)

    def deliver(self, event: Event) -> None:
        """Hand ``event`` to the connections joined to its channel."""
        with self._lock:
            joined = self._channels.get(event.channel)
            if not joined:
                return
            self._last_ids[event.channel] = max(event.id, self._last_ids.get(event.channel, 0))
            targets = tuple(joined)
        if not sendable(event):  # also encodes it here, once, for the handlers
            return
        for connection in targets:
            connection.offer(event)

    def gap(self, gap: Gap) -> None:
        """Hand ``gap`` to the connections joined to its channel, in order with its events."""
        with self._lock:
            joined = self._channels.get(gap.channel)
            if not joined:
                return
            self._last_ids[gap.channel] = min(gap.resume, self._last_ids.get(gap.channel, 0))
            targets = tuple(joined)
        for connection in targets:
            connection.offer(gap)

    def joined(self) -> dict[str, int]:
        """The channels with connections here, each with the id a resync replays after.

        That is the last id delivered here or, when every connection joined after it
        (at the channel's latest id, or after a replay), the earliest of their starts.
        """
        with self._lock:
            return {
                channel: max(
                    self._last_ids.get(channel, 0),
                    min(connection.last_ids.get(channel, 0) for connection in joined),
                )
                for channel, joined in self._channels.items()
            }

    def count(self) -> int:
        """How many connections are joined to at least one channel."""
        with self._lock:
            return len({c for joined in self._channels.values() for c in joined})
