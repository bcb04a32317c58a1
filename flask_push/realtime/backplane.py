"""Backplanes: number, keep and fan out live events, in one process or across many.

``PUSH_BACKPLANE_URL`` picks the class by its scheme, as Flask-SocketIO picks a
client manager from ``message_queue``:

- ``memory://`` (the default): one process; events are numbered and kept in memory.
- ``redis://`` / ``rediss://``: every process and host using the same Redis and
  ``PUSH_BACKPLANE_PREFIX``. A Lua script numbers (``INCR``), keeps (a stream,
  trimmed by count and age) and publishes each event in one step, so ids agree
  across processes and replay reads what every process published.

Either way a channel's numbering starts at the clock in microseconds, so ids keep
increasing when it starts anew (see :mod:`.events`).

A backplane only fans out to this process once :meth:`Backplane.listen` was
called, which the websocket endpoint does on its first connection: the CLI and
worker processes publish write-only, without a subscriber thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from ..errors import BackplaneError, ValidationError
from .events import Event, Replay, replay

log = logging.getLogger("flask_push.realtime")

Deliver = Callable[[Event], None]
Resync = Callable[[], None]


class Backplane(ABC):
    """Numbers, keeps and fans out the events of every channel."""

    def __init__(self, keep_seconds: int, keep_count: int) -> None:
        self.keep_seconds = keep_seconds
        self.keep_count = keep_count

    @abstractmethod
    def publish(self, channel: str, event: str, data_json: str) -> Event:
        """Number and keep the event and hand it to every listening process."""

    @abstractmethod
    def replay(self, channel: str, since: int) -> Replay:
        """The kept events of ``channel`` after ``since``."""

    @abstractmethod
    def last_id(self, channel: str) -> int:
        """The latest id of ``channel``, 0 when it never had an event."""

    @abstractmethod
    def listen(self, deliver: Deliver, resync: Resync) -> None:
        """Start calling ``deliver(event)`` for every event published anywhere, in
        order per channel; ``resync()`` after a lost connection came back.

        Returns once events published from then on will be delivered; or, where
        the backplane does not answer at once, after a bounded wait, and then it
        calls ``resync()`` when it does answer."""

    @abstractmethod
    def close(self) -> None:
        """Stop listening and close connections."""

    #: what ``GET /health`` says of a reachable backplane
    health: Literal["ok", "memory"] = "ok"

    @abstractmethod
    def ping(self) -> None:
        """Check that the backplane answers, within :data:`PING_TIMEOUT` seconds.

        :raises BackplaneError: when it does not.
        """


#: seconds a health check waits for the backplane before calling it down
PING_TIMEOUT = 1.0
#: seconds to connect to Redis; the first listen() waits at most as long for its
#: subscription
CONNECT_TIMEOUT = 2.0
#: after Redis did not answer a publish, how long the next ones fail at once instead
#: of each waiting the socket's timeout for it again: a send to a thousand users,
#: each with an inbox item and a count to publish, would otherwise wait over an hour
UNANSWERED_PAUSE = 5.0
#: seconds of silence after which the subscriber pings Redis, and then how long it
#: waits for the answer before it connects again (and resyncs)
SUBSCRIBER_PING_AFTER = 30.0
SUBSCRIBER_PONG_TIMEOUT = 5.0


def _clock_micros() -> int:
    """Where a new numbering starts: microseconds since 1970."""
    return time.time_ns() // 1000


class MemoryBackplane(Backplane):
    """One process: events are delivered in ``publish``, under a lock, so that
    every connection sees each channel's events in id order."""

    #: forget channels whose events all expired, every this many publishes
    _SWEEP_EVERY = 1000

    #: nothing to reach: one process's memory
    health: Literal["ok", "memory"] = "memory"

    def __init__(self, keep_seconds: int, keep_count: int) -> None:
        super().__init__(keep_seconds, keep_count)
        self._lock = threading.Lock()
        # Counters are kept for good (an int per channel), so ids never restart
        # while the process lives; the kept events expire. The next process starts
        # each channel at its clock, above the ids this one gave.
        self._last: dict[str, int] = {}
        self._first: dict[str, int] = {}
        self._kept: dict[str, deque[tuple[float, Event]]] = {}
        self._deliver: Deliver | None = None
        self._publishes = 0

    def publish(self, channel: str, event: str, data_json: str) -> Event:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(channel)
            if last is None:
                number = self._first[channel] = _clock_micros()
            else:
                number = last + 1
            self._last[channel] = number
            item = Event(channel, number, event, data_json)
            kept = self._kept.get(channel)
            if kept is None:
                kept = self._kept[channel] = deque(maxlen=self.keep_count)
            kept.append((now, item))
            self._publishes += 1
            if self._publishes % self._SWEEP_EVERY == 0:
                self._sweep(now)
            if self._deliver is not None:
                self._deliver(item)
        return item

    def replay(self, channel: str, since: int) -> Replay:
        horizon = time.monotonic() - self.keep_seconds
        with self._lock:
            kept = [e for t, e in self._kept.get(channel, ()) if t >= horizon]
            from_first = bool(kept) and kept[0].id == self._first[channel]
            return replay(kept, self._last.get(channel, 0), since, from_first=from_first)

    def last_id(self, channel: str) -> int:
        with self._lock:
            return self._last.get(channel, 0)

    def listen(self, deliver: Deliver, resync: Resync) -> None:
        with self._lock:
            self._deliver = deliver

    def close(self) -> None:
        with self._lock:
            self._deliver = None

    def ping(self) -> None:
        """Always answers: it is this process's memory."""

    def _sweep(self, now: float) -> None:
        horizon = now - self.keep_seconds
        for channel in [c for c, kept in self._kept.items() if kept[-1][0] < horizon]:
            del self._kept[channel]


#: KEYS: counter, stream, pub/sub channel. ARGV: channel, event, data, keep count,
#: keep seconds, counter ttl. Numbering, keeping and publishing in one script means
#: an event is kept before any process can deliver it, and in id order.
#:
#: A missing counter (never made, expired, or lost with Redis's data) starts at
#: Redis's clock in microseconds, so the new ids are above the old ones; the stream
#: entry of a numbering's first event is marked ``f``: nothing came before it.
#: Lua writes numbers with 14 digits, so the id is formatted as an integer once.
#: Redis does not undo a script's writes when a later command fails: a user whose
#: ACL refuses the PUBLISH is refused first (Redis 7 can tell), so that an event
#: said to be not published is not numbered and kept either.
_PUBLISH = """
if redis.acl_check_cmd and not redis.acl_check_cmd('PUBLISH', KEYS[3], '') then
  return redis.error_reply('NOPERM this user may not publish to ' .. KEYS[3])
end
local now = redis.call('TIME')
local id
local fields
if redis.call('EXISTS', KEYS[1]) == 1 then
  id = string.format('%d', redis.call('INCR', KEYS[1]))
  fields = {'i', id, 'e', ARGV[2], 'd', ARGV[3]}
else
  id = now[1] .. string.format('%06d', now[2])
  redis.call('SET', KEYS[1], id)
  fields = {'i', id, 'e', ARGV[2], 'd', ARGV[3], 'f', '1'}
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], '*', unpack(fields))
local oldest = (tonumber(now[1]) - tonumber(ARGV[5])) * 1000
redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d', oldest))
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', KEYS[3], ARGV[1] .. '\\n' .. id .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[3])
return id
"""

#: a channel's counter outlives its events by far; when it expires (a month without
#: events), the next event starts a numbering above it, and a client's ``since``
#: from the old one gets a gap.
_COUNTER_TTL = 30 * 86400


class RedisBackplane(Backplane):
    """Processes and hosts sharing one Redis.

    Keys, under ``<prefix>:``: ``seq:<channel>`` (the counter), ``log:<channel>``
    (a stream of the kept events) and the pub/sub channel ``events``. One
    subscriber thread per process, started by :meth:`listen`, reconnects with
    backoff when Redis goes away and then asks for a resync, so replay from the
    last delivered ids closes the gap for the connected clients.
    """

    def __init__(self, url: str, prefix: str, keep_seconds: int, keep_count: int) -> None:
        super().__init__(keep_seconds, keep_count)
        import redis

        #: what Redis can answer or fail with; each becomes a BackplaneError
        self._redis_errors = redis.RedisError
        self.prefix = prefix
        # A blocking pool: thousands of sockets joining at once (greenlets under
        # gevent) wait their turn for a connection instead of failing or opening
        # one each.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=32,
            timeout=5,
            socket_timeout=2,
            socket_connect_timeout=CONNECT_TIMEOUT,
        )
        self._client = redis.Redis(connection_pool=pool)
        self._script = self._client.register_script(_PUBLISH)
        self._url = url
        # Redis's pub/sub ignores the database number: apps kept apart by it (one
        # on /1, one on /2) would hear each other's events. Database 0 keeps the
        # plain name, which processes of earlier versions publish on.
        database = int(pool.connection_kwargs.get("db") or 0)
        self._events_key = f"{prefix}:events" + (f"@{database}" if database else "")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: whether Redis confirmed the subscription: an event published before that
        #: is sent to nobody here (read and written under the lock)
        self._subscribed = False
        #: set once the subscriber's first try is over, confirmed or failed
        self._first_try = threading.Event()
        #: the first listen() went on unsubscribed: resync once subscribed
        self._went_on = False
        self._lock = threading.Lock()
        self._ping_client: Any = None
        #: when (monotonic) a publish last found Redis not answering; None: it answered
        self._unanswered_at: float | None = None
        #: a publish is asking Redis again after the pause; the others still rest
        self._asking = False

    def _keys(self, channel: str) -> tuple[str, str]:
        return f"{self.prefix}:seq:{channel}", f"{self.prefix}:log:{channel}"

    def publish(self, channel: str, event: str, data_json: str) -> Event:
        counter, stream = self._keys(channel)
        args: list[str | int] = [
            channel,
            event,
            data_json,
            self.keep_count,
            self.keep_seconds,
            _COUNTER_TTL,
        ]
        asking = self._unanswered_at is not None and self._rest_or_ask()
        try:
            number = self._script(keys=[counter, stream, self._events_key], args=args)
        except self._redis_errors as err:
            failure = _failed("live event not published", err)
            # answered with an error: Redis is there
            unreachable = isinstance(failure, BackplaneUnreachable)
            self._unanswered_at = time.monotonic() if unreachable else None
            raise failure from err
        else:
            self._unanswered_at = None
        finally:
            if asking:
                self._asking = False
        return Event(channel, int(number), event, data_json)

    def _rest_or_ask(self) -> bool:
        """Since Redis did not answer a publish: raise :class:`BackplaneResting` until
        :data:`UNANSWERED_PAUSE` has passed; then let one publish ask it (True: this
        one), while the others of this process go on resting until it has its
        answer, since each would wait the socket's timeout for a Redis still hung."""
        with self._lock:
            unanswered_at = self._unanswered_at
            if unanswered_at is None:
                return False  # it answered meanwhile
            ago = time.monotonic() - unanswered_at
            if ago >= UNANSWERED_PAUSE and not self._asking:
                self._asking = True
                return True
        then = (
            "another publish is asking it again"
            if self._asking
            else f"it is not asked again until {UNANSWERED_PAUSE:g} s after that"
        )
        raise BackplaneResting(
            f"live event not published: Redis did not answer {ago:.1f} s ago, and {then}"
        )

    def replay(self, channel: str, since: int) -> Replay:
        counter, stream = self._keys(channel)
        try:
            # a rejoin that finds nothing new (the usual reconnect) reads the counter
            # alone, not every kept event (up to PUSH_EVENTS_KEEP_COUNT of them)
            if since and int(self._client.get(counter) or 0) == since:
                return Replay(False, [], since)
            pipe = self._client.pipeline(transaction=True)
            pipe.time()
            pipe.get(counter)
            pipe.xrange(stream)
            (seconds, micros), last, entries = pipe.execute()
        except self._redis_errors as err:
            raise _failed("cannot replay", err) from err
        # Trimming by age happens on publish; a quiet channel may still hold old entries.
        oldest = (seconds - self.keep_seconds) * 1000 + micros // 1000
        fresh = [f for entry_id, f in entries if int(entry_id.split(b"-")[0]) >= oldest]
        # Bytes that are not UTF-8 (written by something else) decode to lone
        # surrogates, which the hub and the handler refuse to send, with a log
        # line: one bad entry must not fail the whole replay.
        kept = [
            Event(
                channel,
                int(f[b"i"]),
                f[b"e"].decode(errors="surrogateescape"),
                f[b"d"].decode(errors="surrogateescape"),
            )
            for f in fresh
        ]
        from_first = bool(fresh) and b"f" in fresh[0]
        return replay(kept, int(last or 0), since, from_first=from_first)

    def ping(self) -> None:
        with self._lock:
            if self._ping_client is None:
                import redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                # A client of its own: short timeouts, no retries, and never a wait
                # behind the pool's 32 connections, so a health check stays fast.
                self._ping_client = redis.Redis.from_url(
                    self._url,
                    socket_timeout=PING_TIMEOUT,
                    socket_connect_timeout=PING_TIMEOUT,
                    retry=Retry(NoBackoff(), 0),
                )
            client = self._ping_client
        try:
            client.ping()
        except self._redis_errors as err:
            raise _failed("", err) from err

    def last_id(self, channel: str) -> int:
        try:
            return int(self._client.get(self._keys(channel)[0]) or 0)
        except self._redis_errors as err:
            raise _failed("cannot read a channel", err) from err

    def listen(self, deliver: Deliver, resync: Resync) -> None:
        with self._lock:
            starting = self._thread is None
            if starting:
                self._thread = threading.Thread(
                    target=self._subscribe, args=(deliver, resync), daemon=True,
                    name="flask-push-backplane",
                )  # fmt: skip
                self._thread.start()
        if starting:
            # The first websocket to join waits for the subscription, so that its
            # client, told "subscribed", gets what is published next (those joining
            # meanwhile wait behind it). Where the first try fails, or takes longer
            # than a connection may, it goes on, and the subscriber resyncs once
            # it is subscribed.
            self._first_try.wait(CONNECT_TIMEOUT)
            with self._lock:
                self._went_on = not self._subscribed

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        self._client.close()
        self._client.connection_pool.disconnect()
        with self._lock:
            ping, self._ping_client = self._ping_client, None
        if ping is not None:
            ping.close()

    def _subscribe(self, deliver: Deliver, resync: Resync) -> None:
        import redis

        # failure: why the last try failed ("" once subscribed), logged when it changes
        delay, failure = 0.1, ""
        while not self._stop.is_set():
            client = redis.Redis.from_url(self._url, socket_connect_timeout=CONNECT_TIMEOUT)
            pubsub = client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
            try:
                pubsub.subscribe(self._events_key)
                if not self._confirm(pubsub):
                    break  # closed meanwhile
                with self._lock:
                    late, self._went_on = self._went_on, False
                if failure:
                    log.warning("flask-push: backplane subscriber is back; catching up")
                if failure or late:
                    self._catch_up(resync)
                delay, failure = 0.1, ""
                heard, asked = time.monotonic(), 0.0
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    now = time.monotonic()
                    if message is not None:
                        heard, asked = now, 0.0
                        if message["type"] == "message":
                            self._deliver(deliver, message["data"])
                    elif asked and now - asked > SUBSCRIBER_PONG_TIMEOUT:
                        raise redis.TimeoutError(
                            f"no answer to a ping in {SUBSCRIBER_PONG_TIMEOUT:g} s"
                        )
                    elif not asked and now - heard > SUBSCRIBER_PING_AFTER:
                        # A connection that a load balancer or NAT forgot says
                        # nothing, ever: only a question shows that it is gone.
                        pubsub.ping()
                        asked = now
            except Exception as err:  # noqa: BLE001 - said below, and tried again
                # Unreachable, or refusing (an ACL without the channel, a replica
                # that went read-only), or a bug: any of them would end live events
                # from other processes for good, so each new reason is logged and
                # the subscriber tries again after the backoff.
                self._first_try.set()
                if isinstance(err, redis.RedisError):
                    said, known = str(_failed("", err)), True
                else:
                    said, known = f"{type(err).__name__}: {err}", False
                if said != failure:
                    log.warning(
                        "flask-push: backplane subscriber failed (%s); live events from "
                        "other processes wait until it is back; retrying",
                        said,
                        exc_info=not known,
                    )
                failure = said
            finally:
                try:
                    pubsub.close()
                    client.close()
                except Exception:  # noqa: BLE001 - already broken
                    pass
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, 5.0)

    @staticmethod
    def _catch_up(resync: Resync) -> None:
        """Run ``resync``; live events go on whatever becomes of it."""
        try:
            resync()
        except Exception:  # noqa: BLE001 - said; reconnecting would not mend it
            log.exception("flask-push: catching up after the backplane was away failed")

    def _confirm(self, pubsub: Any) -> bool:
        """Wait for Redis's answer to the SUBSCRIBE: from then on it sends us every
        event, so a resync's replay read after it misses none. False when closed
        before it came."""
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=0.5)
            if message is not None and message["type"] == "subscribe":
                with self._lock:
                    self._subscribed = True
                self._first_try.set()
                return True
        return False

    @staticmethod
    def _deliver(deliver: Deliver, raw: bytes) -> None:
        try:
            # from the right: a channel may hold line breaks (a user id may), while
            # the id is digits, an event name has no whitespace, and compact JSON
            # has no raw line break
            channel, number, event, data_json = raw.decode().rsplit("\n", 3)
            deliver(Event(channel, int(number), event, data_json))
        except Exception:  # one bad message must not stop the subscriber
            log.exception("flask-push: cannot deliver a backplane message")


class BackplaneUnreachable(BackplaneError):
    """Redis did not answer at all (refused, reset, timed out): asking it about the
    next channel would most likely wait as long for nothing. After a timeout the
    event may still reach Redis, and then its subscribers, later."""


class BackplaneResting(BackplaneUnreachable):
    """Not asked: Redis did not answer a publish moments ago
    (:data:`UNANSWERED_PAUSE`). That failure was said already."""


def _failed(doing: str, err: Exception) -> BackplaneError:
    """``err`` from redis-py, said as what went wrong with ``doing``: Redis out of
    reach, or answering with a refusal (``NOPERM``, ``READONLY``, ``OOM``)."""
    import redis

    kind = BackplaneError
    if isinstance(err, redis.AuthenticationError):  # a ConnectionError, yet an answer
        why = f"Redis refused the login: {err}"
    elif isinstance(err, (redis.ConnectionError, redis.TimeoutError)):
        why, kind = f"Redis is unreachable: {err}", BackplaneUnreachable
    elif isinstance(err, redis.exceptions.InvalidResponse):
        why = f"what answered is not Redis: {err}"
    else:
        why = f"Redis refused it: {err}"
    return kind(f"{doing}, {why}" if doing else why)


def backplane_for(url: str, prefix: str, keep_seconds: int, keep_count: int) -> Backplane:
    """The backplane that ``PUSH_BACKPLANE_URL`` names."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBackplane(keep_seconds, keep_count)
    return RedisBackplane(url, prefix, keep_seconds, keep_count)


def dumps(data: Any) -> str:
    """Event data as compact JSON text that a websocket frame can carry.

    :raises ValidationError: (field ``data``) for what JSON cannot encode, NaN and
        infinities (Python writes them, but they are not JSON, and browsers'
        ``JSON.parse`` refuses them) and lone surrogates, in values or keys (a
        text frame is UTF-8, which cannot hold them).
    """
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        problem = "must not hold unpaired surrogate characters, which UTF-8 cannot encode"
        raise ValidationError(problem, field="data", code="invalid_value") from err
    except (TypeError, ValueError, RecursionError) as err:
        problem = f"must be plain JSON (finite numbers, not nested too deeply): {err}"
        raise ValidationError(problem, field="data", code="invalid_value") from err
    return text
