"""This process's websocket connections, by channel, and their bounded queues.

A broadcast writes each event's frame (encoded once) straight to the sockets of
the joined connections that have nothing waiting, with a send that never blocks:
the handlers stay asleep. Only where that cannot be done (the handler is writing,
or the socket's buffer is full, or earlier events wait) does the event go to the
connection's queue, and its handler is woken to write it from its own loop. A
connection whose queue is full (a client that stopped reading) is dropped, so it
never stalls anyone else.
"""

from __future__ import annotations

import _socket
import logging
import socket
import threading
import time
from collections.abc import Collection
from typing import Any

from .events import Event, Gap, Notice, sendable

#: what a connection's queue holds
Item = Event | Gap | Notice

log = logging.getLogger("flask_push.realtime")

#: the replays (joins with ``since`` that found events to send) a socket may have at
#: once, and the seconds it earns another in: each may be as long as the channel
#: keeps, for a frame of a few bytes. A client that reconnects rejoins each of its
#: channels with ``since``: the burst leaves room for many.
REPLAY_BURST = 32
REPLAY_EVERY = 6.0
#: the channels one socket may follow at once (its user's own among them): each costs
#: the process memory for as long as the socket lives, and a client that joins one
#: after another (an authorizer that lets anyone follow any ``product:<id>``) must
#: not grow it without end
MAX_CHANNELS = 1000


class Connection:
    """One websocket's side of the hub: its channels and its queue of events.

    Kept small, as there may be ten thousand per process: slots, and a list for
    the queue (an empty deque takes a block of 64 slots).

    Who writes to the socket: whoever holds :attr:`lock`. The handler holds it
    while it answers the client and empties the queue (its writes may wait on a
    full socket); a broadcaster only tries it, writes without waiting, and lets go.
    """

    __slots__ = (
        "wake", "_sock", "_direct", "_flags", "lock", "max_queue", "queue", "pending",
        "last_ids", "dropped", "sent_at", "replays", "user_id",
    )  # fmt: skip

    def __init__(
        self, wake: Any, sock: socket.socket | None, max_queue: int, user_id: str | None = None
    ) -> None:
        #: who the socket is (None: anonymous), for a channel they may no longer follow
        self.user_id = user_id
        #: set when there is something for the handler to do; shared with the
        #: websocket's reader, so one wait covers frames in and events out
        self.wake = wake
        self._sock = sock
        #: the socket a broadcaster writes to with ``send(data, _flags)``, which
        #: never waits; kept as the socket, not a bound method: one object fewer
        self._direct: _socket.socket | None
        self._direct, self._flags = direct_socket(sock) or (None, 0)
        self.lock = threading.Lock()
        self.max_queue = max_queue
        #: appended to by broadcasters, emptied from the front by the handler only
        self.queue: list[Item] = []
        #: the rest of a frame a broadcaster began: the handler writes it first
        self.pending = b""
        #: the channels joined, each with the last event id sent (or the point a
        #: replay starts from); an event at or below it is a copy of one sent, and is
        #: skipped. One dict for both: there may be ten thousand connections.
        self.last_ids: dict[str, int] = {}
        self.dropped = False
        #: when the socket was last written to, by a broadcaster or the handler
        #: (``time.monotonic()``), for the handler's heartbeat
        self.sent_at = 0.0
        #: the replays it may still ask for, and when that was counted; None until
        #: its first (most sockets never ask)
        self.replays: tuple[float, float] | None = None

    def may_replay(self, now: float) -> bool:
        """Whether the client may have one more replay: :data:`REPLAY_BURST` at
        once, then one every :data:`REPLAY_EVERY` seconds (:meth:`replayed` spends
        one).

        :param now: ``time.monotonic()``.
        """
        left, at = self.replays or (float(REPLAY_BURST), now)
        left = min(float(REPLAY_BURST), left + (now - at) / REPLAY_EVERY)
        self.replays = (left, now)
        return left >= 1

    def replayed(self) -> None:
        """Spend a replay that sent events (one that found none costs nothing)."""
        left, at = self.replays or (float(REPLAY_BURST), 0.0)
        self.replays = (left - 1, at)

    def offer(self, event: Item, now: float) -> None:
        """Send ``event`` now if the socket takes it without waiting, else queue it;
        drop the connection when its queue is full. Never blocks.

        :param now: ``time.monotonic()``, read once per broadcast.
        """
        if self.dropped:
            return
        direct = self._direct
        if direct is None or not self.lock.acquire(False):
            self._queue(event)  # the handler is writing: it takes the queue next
            return
        try:
            if self.queue or self.pending:
                self._queue(event)  # behind what waits, in order
            elif self._admit(event):
                data = event.wire
                try:
                    sent = direct.send(data, self._flags)
                except OSError:
                    # BlockingIOError: a full buffer, the handler waits for room.
                    # Anything else: a broken socket, which the handler's write ends.
                    sent = 0
                if sent < len(data):
                    self.pending = data[sent:]
                    self.wake.set()
                if now > self.sent_at:  # the handler may have written since ``now``
                    self.sent_at = now
        finally:
            self.lock.release()

    def _queue(self, event: Item) -> None:
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

    def take(self) -> list[Item]:
        """The queued events and gaps still worth sending, in order."""
        # Take a count, then that many from the front: a broadcaster's append in
        # between lands after them and waits for the next take.
        count = len(self.queue)
        queued = self.queue[:count]
        del self.queue[:count]
        return [item for item in queued if self._admit(item)]

    def _admit(self, item: Item) -> bool:
        """Is ``item`` for this connection, and new to it? Notes it as sent."""
        last = self.last_ids.get(item.channel)
        if last is None:
            # not joined (any more); a notice is about having been made to leave
            return isinstance(item, Notice)
        if isinstance(item, Event):
            if item.id > last:
                self.last_ids[item.channel] = item.id
                return True
            return False
        if isinstance(item, Gap):
            # the events after it may be numbered anew, below those sent
            self.last_ids[item.channel] = min(last, item.resume)
        return True


def direct_socket(sock: socket.socket | None) -> tuple[_socket.socket, int] | None:
    """The socket and flags with which a send to ``sock`` returns at once (None
    where there are none): it writes what the buffer takes, or raises
    BlockingIOError.

    Under gevent the socket wraps a non-blocking one, whose own ``send`` never
    waits (and skips gevent's wrapper). A blocking standard socket (Werkzeug's
    threaded server) sends with ``MSG_DONTWAIT``. One with a timeout would wait in
    ``send`` for room: it gets no direct writes.
    """
    if sock is None:
        return None
    raw = getattr(sock, "_sock", None)  # gevent's socket: the non-blocking one inside
    if isinstance(raw, _socket.socket) and raw.gettimeout() == 0.0:
        return raw, 0
    dontwait = getattr(socket, "MSG_DONTWAIT", 0)
    if isinstance(sock, socket.socket) and sock.gettimeout() is None and dontwait:
        return sock, dontwait
    return None


class Hub:
    """Channels of this process and the connections joined to them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, set[Connection]] = {}
        #: the last id delivered per channel, where a resync starts from
        self._last_ids: dict[str, int] = {}
        #: the sockets each user holds here, counted while there is a limit
        self._per_user: dict[str, int] = {}

    def admit(self, user_id: str, most: int) -> bool:
        """Count one more socket of ``user_id``, unless they hold ``most`` already;
        each socket admitted is given back with :meth:`release` when it ends."""
        with self._lock:
            held = self._per_user.get(user_id, 0)
            if held >= most:
                return False
            self._per_user[user_id] = held + 1
            return True

    def release(self, user_id: str) -> None:
        with self._lock:
            held = self._per_user.pop(user_id) - 1
            if held:
                self._per_user[user_id] = held

    def join(self, connection: Connection, channel: str) -> None:
        with self._lock:
            self._channels.setdefault(channel, set()).add(connection)
        connection.last_ids.setdefault(channel, 0)

    def leave(self, connection: Connection, channel: str) -> None:
        connection.last_ids.pop(channel, None)
        with self._lock:
            joined = self._channels.get(channel)
            if joined is not None:
                joined.discard(connection)
                if not joined:
                    del self._channels[channel]
                    self._last_ids.pop(channel, None)

    def leave_all(self, connection: Connection) -> None:
        for channel in list(connection.last_ids):
            self.leave(connection, channel)

    def deliver(self, event: Event) -> None:
        """Hand ``event`` to the connections joined to its channel."""
        with self._lock:
            joined = self._channels.get(event.channel)
            if not joined:
                return
            self._last_ids[event.channel] = max(event.id, self._last_ids.get(event.channel, 0))
            targets = tuple(joined)
        if not sendable(event):  # also encodes it here, once, for every socket
            return
        now = time.monotonic()
        for connection in targets:
            connection.offer(event, now)

    def gap(self, gap: Gap) -> None:
        """Hand ``gap`` to the connections joined to its channel, in order with its events."""
        with self._lock:
            joined = self._channels.get(gap.channel)
            if not joined:
                return
            self._last_ids[gap.channel] = min(gap.resume, self._last_ids.get(gap.channel, 0))
            targets = tuple(joined)
        now = time.monotonic()
        for connection in targets:
            connection.offer(gap, now)

    def shut_out(self, channel: str, users: Collection[str], notice: Notice) -> None:
        """Make the connections of ``users`` on ``channel`` leave it, each told with
        ``notice``."""
        with self._lock:
            joined = self._channels.get(channel, ())
            leaving = [c for c in joined if c.user_id is not None and c.user_id in users]
        now = time.monotonic()
        for connection in leaving:
            # told first, and behind what it was sent before; an event after this
            # one finds the connection gone from the channel
            connection.offer(notice, now)
            self.leave(connection, channel)

    def resume(self, channel: str, last: int) -> None:
        """After a gap: the next resync of ``channel`` replays what follows ``last``."""
        with self._lock:
            if channel in self._channels:
                self._last_ids[channel] = max(last, self._last_ids.get(channel, 0))

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
