"""Live events: a websocket endpoint, channels, and a backplane across processes.

:class:`Realtime` is one app's live side, made on first use: the backplane that
``PUSH_BACKPLANE_URL`` names and this process's :class:`~.hub.Hub` of websocket
connections. The hub starts listening to the backplane only when the first
websocket connects, so processes without sockets publish write-only.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from ..config import PushSettings
from ..errors import BackplaneError
from .backplane import Backplane, BackplaneUnreachable, backplane_for, dumps
from .events import LEFT_CHANNEL, Event, Gap, Notice, Replay, channel_name, event_name
from .hub import Connection, Hub

__all__ = ["Connection", "Event", "Realtime", "Replay"]

log = logging.getLogger("flask_push.realtime")


class Realtime:
    """One app's backplane and this process's websocket connections."""

    def __init__(self, settings: PushSettings) -> None:
        self.settings = settings
        self.backplane: Backplane = backplane_for(
            settings.backplane_url,
            settings.backplane_prefix,
            settings.events_keep_seconds,
            settings.events_keep_count,
        )
        self.hub = Hub()
        #: a forked child inherits this object but not the subscriber thread
        self.pid = os.getpid()
        self._listening = False
        self._lock = threading.Lock()
        #: the id of the last shut-out seen, from which a resync replays those that
        #: went by while the backplane was away; None: not known (not listening yet,
        #: or the backplane did not answer then)
        self._left_seen: int | None = None
        #: channels a socket joined while the backplane did not answer, so at a place
        #: not known: a resync tells them to reload rather than replay from 0
        self._unplaced: set[str] = set()

    def publish(self, channel: str, event: str, data: Any = None) -> Event:
        """Number, keep and fan out one event.

        :raises BackplaneError: it could not be (Redis away): the event is lost (or,
            when Redis took it but did not answer in time, goes out when it
            recovers), and this process's connections on ``channel`` get a ``gap`` at
            once, so that their clients reload what they show rather than wait for
            an event that may never come.
        """
        channel = channel_name(channel)
        event = event_name(event)
        encoded = dumps(data)
        try:
            return self.backplane.publish(channel, event, encoded)
        except BackplaneError:
            last = self.hub.joined().get(channel)
            if last is not None:
                self.hub.gap(Gap(channel, last))
            raise

    def shut_out(self, channel: str, users: list[str], why: str) -> None:
        """Make the sockets of ``users`` leave ``channel``, in every process sharing
        the backplane, each told ``why`` in a ``forbidden`` error; a socket may join
        it again only if ``channel_authorizer`` (or an activity) lets it.

        :raises BackplaneError: the backplane (Redis) cannot be reached.
        """
        data = {"channel": channel_name(channel), "users": users, "why": why}
        self.backplane.publish(LEFT_CHANNEL, "left", dumps(data))

    def _deliver(self, event: Event) -> None:
        if event.channel != LEFT_CHANNEL:
            self.hub.deliver(event)
            return
        self._left_seen = max(self._left_seen or 0, event.id)
        left = event.data
        channel = left["channel"]
        notice = json.dumps(
            {"op": "error", "code": "forbidden", "channel": channel, "message": left["why"]}
        )
        self.hub.shut_out(channel, frozenset(left["users"]), Notice(channel, notice))

    def join(
        self,
        connection: Connection,
        channel: str,
        since: int | None = None,
        *,
        seen: int | None = None,
    ) -> Replay | None:
        """Join ``connection`` to ``channel``; with ``since``, return what it missed.

        The connection joins before the replay is read, and skips any live
        event whose id it has already been sent, so replay and live events meet
        without a hole or a duplicate.

        :param seen: for a channel joined on the client's behalf after its
            handshake (its user's): the channel's last id before the handshake.
            Anything published since is returned as a replay, as the client may
            have counted on live events from the moment it opened.
        """
        self._listen()
        following = channel in connection.last_ids
        self.hub.join(connection, channel)
        if following and since is None and seen is None:
            # asked again (a page's on() for a channel it follows): its events go on
            # reaching it; taking the channel's latest id as seen would drop those
            # numbered already but not yet delivered here
            return None
        if since is not None:
            try:
                return self._replay(connection, channel, since)
            except BackplaneError:
                self._unplace(channel)
                raise
        try:
            last = self.backplane.last_id(channel)
        except BackplaneError as err:
            log.warning("flask-push: %s", err)
            self._unplace(channel)
            last = 0
        else:
            if seen is not None and last > seen:
                try:
                    return self._replay(connection, channel, seen)
                except BackplaneError as err:
                    log.warning(
                        "flask-push: %s; events on %r published while its websocket "
                        "opened were not sent to it", err, channel,
                    )  # fmt: skip
        connection.last_ids[channel] = max(last, connection.last_ids.get(channel, 0))
        return None

    def _unplace(self, channel: str) -> None:
        # Read from 0, a resync would send this socket every event the channel
        # keeps, most of them older than the state its page has just read (stale
        # unread counts, notifications shown again).
        with self._lock:
            self._unplaced.add(channel)

    def _catch_up_shut_outs(self) -> None:
        """Before the channels' events are replayed: make leave the sockets of users
        shut out while the backplane was away, so that none is sent what came after."""
        seen = self._left_seen
        try:
            if seen is None:
                # not known when listening began; from now on, it is
                self._left_seen = self.backplane.last_id(LEFT_CHANNEL)
                raise BackplaneError("where they would start is not known")
            missed = self.backplane.replay(LEFT_CHANNEL, seen)
        except BackplaneError as err:
            log.warning(
                "flask-push: the shut-outs published while the backplane was away cannot "
                "be read (%s): a socket of a user an activity left out meanwhile may stay "
                "on its channel until it reconnects",
                err,
            )
            return
        if missed.gap:
            log.warning(
                "flask-push: some shut-outs published while the backplane was away are "
                "lost (did Redis restart without its data?): a socket of a user an "
                "activity left out meanwhile may stay on its channel until it reconnects"
            )
        for event in missed.events:
            self._deliver(event)
        self._left_seen = max(self._left_seen or 0, missed.last_id)

    def _replay(self, connection: Connection, channel: str, since: int) -> Replay:
        replay = self.backplane.replay(channel, since)
        connection.last_ids[channel] = replay.events[-1].id if replay.events else replay.last_id
        return replay

    def _listen(self) -> None:
        with self._lock:
            if not self._listening:
                try:
                    self._left_seen = self.backplane.last_id(LEFT_CHANNEL)
                except BackplaneError:
                    self._left_seen = None  # its first resync cannot catch up on them
                self.backplane.listen(self._deliver, self._resync)
                self._listening = True

    def _resync(self) -> None:
        """After the backplane was unreachable: deliver what the joined channels missed.

        Where some of it is lost (a Redis that restarted without its data), or a
        channel's replay cannot be read, the channel's connections get a ``gap``
        first, in order with the events, so their clients reload what they show.
        """
        self._catch_up_shut_outs()
        with self._lock:
            unplaced, self._unplaced = self._unplaced, set()
        gaps, unread, why = 0, 0, None
        for channel, last in self.hub.joined().items():
            if isinstance(why, BackplaneUnreachable):
                # Redis went away again: each question would wait its timeout, and
                # the subscriber reads nothing meanwhile; tell the clients instead
                unread += 1
                self.hub.gap(Gap(channel, last))
                if channel in unplaced:
                    self._unplace(channel)
                continue
            try:
                if channel in unplaced:
                    # a socket here joined at a place not known: its client reloads,
                    # and the channel goes on from its latest event
                    now = self.backplane.last_id(channel)
                    self.hub.gap(Gap(channel, now))
                    self.hub.resume(channel, now)
                    continue
                replay = self.backplane.replay(channel, last)
            except BackplaneError as err:
                unread, why = unread + 1, err
                self.hub.gap(Gap(channel, last))
                if channel in unplaced:
                    self._unplace(channel)
                continue
            if replay.gap:
                gaps += 1
                resume = replay.events[0].id - 1 if replay.events else replay.last_id
                self.hub.gap(Gap(channel, resume))
            for event in replay.events:
                self.hub.deliver(event)
        if gaps:
            log.warning(
                "flask-push: %d channel(s) lost live events while the backplane was away "
                "(did Redis restart without its data?); their clients were sent a gap to reload",
                gaps,
            )
        if unread:
            log.warning(
                "flask-push: %d channel(s) could not be caught up after the backplane was "
                "away (%s); their clients were sent a gap to reload",
                unread,
                why,
            )

    def close(self) -> None:
        self.backplane.close()
