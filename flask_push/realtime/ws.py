"""The websocket endpoint, ``<PUSH_URL_PREFIX>/ws`` (CONTRACT.md section 5).

The handler stays thin: it takes the user from ``identity_loader`` during the
handshake, joins ``user:<id>``, answers the client's ops and writes the events a
broadcast could not write straight away (see :mod:`.hub`). It waits on one event
for both directions (simple-websocket's own, which its reader sets for every frame
in, and which the hub sets for every event queued), so a connection costs the
handler and simple-websocket's reader and nothing more: under gevent both are
greenlets, and a broadcast wakes neither.

Before the upgrade, the handshake's ``Origin`` is checked: a browser sends the
user's cookies with a websocket handshake whatever page opens it, so without the
check any site could read its visitors' events (cross-site websocket hijacking).
After the upgrade, nothing may escape the handler: Flask would write its HTTP
error answer into the websocket stream.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import RemoteProtocolError

from .. import validation
from ..api.http import ApiError, error_response
from ..config import PushSettings
from ..errors import BackplaneError, ValidationError
from . import Connection, Realtime
from . import hub as hub_module
from .budget import CountedControlFrames, FrameBudget, Verdict
from .events import (
    ACTIVITY_CHANNEL_PREFIX,
    CHANNEL_RULE,
    Replay,
    channel_name,
    encode_frame,
    gap_frame,
    sendable,
    user_channel,
)

log = logging.getLogger("flask_push.realtime")

PONG = '{"op":"pong"}'
#: the ``unavailable`` error of a join whose replay the Redis backplane cannot give
UNAVAILABLE = "Missed events cannot be read now; reload your state."
#: a ping's id stays below 2^53, which JavaScript numbers hold exactly
MAX_PING_ID = 2**53


def register(bp: Blueprint) -> None:
    """Add the ``/ws`` route to the push blueprint (flask-sock's ``bp=``)."""
    Sock().route("/ws", bp=bp)(serve)
    endpoint = f"{bp.name}.{serve.__name__}"

    @bp.before_request
    def handshake() -> Response | None:
        if request.endpoint != endpoint:
            return None
        # Before the upgrade and before identity_loader: a refusal is a plain 403.
        settings: PushSettings = current_app.extensions["push"].settings
        origin = request.headers.get("Origin")
        if not validation.origin_allowed(origin, request.host, settings.ws_allowed_origins):
            log.warning(
                "flask-push: refused a websocket handshake from Origin %r to host %r; "
                "if that origin is yours, add it to PUSH_WS_ALLOWED_ORIGINS",
                origin,
                request.host,
            )
            return error_response(
                ApiError(
                    403,
                    "forbidden_origin",
                    "Pages of this origin may not open the websocket: only the site's own "
                    "origin and those in PUSH_WS_ALLOWED_ORIGINS may.",
                )
            )
        # Browsers offer permessage-deflate, and simple-websocket accepts it. For
        # small JSON frames it saves little, yet zlib's state costs every socket
        # about 300 KiB and each frame is compressed once per socket. Without the
        # offer the handshake agrees to none, and one encoding of an event's
        # frame (Event.wire) serves every socket.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        try:
            asked = _own_channel_asked(request.args)
        except ApiError as err:
            return error_response(err)
        _warn_if_one_at_a_time(request.environ)
        _warn_if_memory_across_processes(request.environ, settings)
        _mark_before_upgrade(current_app.extensions["push"].push, asked)
        return None

    @bp.errorhandler(RemoteProtocolError)
    def not_a_handshake(err: RemoteProtocolError) -> Response:
        # Raised by wsproto as simple-websocket answers the upgrade, before anything is
        # written: a request without Sec-WebSocket-Key, or for a version other than 13.
        # The client's mistake, not a 500 with a traceback.
        return error_response(
            ApiError(400, "bad_request", f"Not a websocket handshake this server takes: {err}.")
        )


#: what this process has said of the server it runs on, each once
_said: set[str] = set()


def _say_once(what: str, message: str, *args: Any) -> None:
    """A WARNING the first time ``what`` is found in this process, not per socket."""
    if what not in _said:
        _said.add(what)
        log.warning(message, *args)


def _serves_one_at_a_time(environ: dict[str, Any]) -> bool:
    """Whether the server runs this process's requests one after the other
    (gunicorn's default sync worker, Werkzeug's with ``threaded=False``): not
    threaded (``wsgi.multithread``) and not on gevent's or eventlet's patched
    sockets, whose servers say ``multithread`` false too."""
    if environ.get("wsgi.multithread", True):
        return False
    gevent = sys.modules.get("gevent.monkey")
    if gevent is not None and gevent.is_module_patched("socket"):
        return False
    eventlet = sys.modules.get("eventlet.patcher")
    return not (eventlet is not None and eventlet.is_monkey_patched("socket"))


def _warn_if_one_at_a_time(environ: dict[str, Any]) -> None:
    """Say that a websocket stalls a server that serves one request at a time: it
    holds the process for as long as it is open (gunicorn's sync worker is killed for
    it after its timeout), and nothing else said why."""
    if _serves_one_at_a_time(environ):
        _say_once(
            "one_at_a_time",
            "flask-push: a websocket is opening on a server that serves one request at a "
            "time in this process (%s): it holds the process until it closes, and no "
            "other request is answered meanwhile. Serve the app with gunicorn -k gevent, "
            "or with --threads N (N sockets per process); gunicorn's default sync worker "
            "cannot serve websockets.",
            environ.get("SERVER_SOFTWARE", "wsgi.multithread is false"),
        )


def _warn_if_memory_across_processes(environ: dict[str, Any], settings: PushSettings) -> None:
    """Say that ``memory://`` cannot reach the sockets of the server's other processes
    (gunicorn with ``-w 2`` or more): an event published in one process misses every
    socket held by another, and nothing else says so."""
    if environ.get("wsgi.multiprocess") and urlsplit(settings.backplane_url).scheme == "memory":
        _say_once(
            "memory_across_processes",
            "flask-push: this server runs the app in several processes, but "
            "PUSH_BACKPLANE_URL is memory://, so a live event reaches only the websockets "
            "of the process that publishes it: the clients connected to the others miss "
            "it. Set PUSH_BACKPLANE_URL to a Redis that every process uses (redis://...).",
        )


#: ``flask.g`` key: the handshake's :class:`_Handshake`, or what the identity loader
#: raised
_MARK = "_push_ws_mark"


@dataclass(frozen=True)
class _OwnChannelAsked:
    """What the handshake's query asks of the user's own channel.

    ``?own=`` asks the server to name that channel (a ``subscribed`` frame with
    ``"own": true``, before anything else): a page may follow other users' channels
    too (a staff page), and only its own channel's events are its inbox. A client
    that reconnects says which channel it took for its own and the last id it saw
    there (``?own=user:42&since=17``): the server replays what came after, before any
    live event, so none is lost while the client would otherwise ask with a
    ``subscribe`` of its own.
    """

    named: bool = False
    channel: str | None = None
    since: int | None = None


def _own_channel_asked(args: Any) -> _OwnChannelAsked:
    """Read ``own`` and ``since`` from the handshake's query; 400 when bad."""
    since_text = args.get("since")
    if "own" not in args:
        if since_text is not None:
            raise ApiError(
                400,
                "bad_request",
                "'since' in the websocket's URL is the last id seen on the user's own "
                "channel: give that channel as 'own' too (?own=user:42&since=17).",
            )
        return _OwnChannelAsked()
    since = None
    if since_text is not None:
        # at most 19 digits before int(): it refuses text of thousands (ValueError)
        if not validation.digits(since_text) or len(since_text) > 19 or int(since_text) >= 2**63:
            raise ApiError(400, "bad_request", "'since' must be a whole number of at least 0.")
        since = int(since_text)
    return _OwnChannelAsked(True, args.get("own") or None, since)


@dataclass(frozen=True)
class _Handshake:
    """Who connects, and how far their channel's numbering was before the 101."""

    user_id: str | None
    mark: int | None
    asked: _OwnChannelAsked


def _mark_before_upgrade(push: Any, asked: _OwnChannelAsked) -> None:
    """Note, before the 101, who connects and how far their channel's numbering is.

    The handler joins ``user:<id>`` once the 101 has gone, while the client may
    count on live events from ``open`` on (read the inbox, then follow the
    events): what is published to the channel in between reaches it as a replay
    from this mark.
    """
    try:
        user_id = push.current_user_id()
    except Exception as err:  # noqa: BLE001 - raised by the handler, after the 101
        setattr(g, _MARK, err)
        return
    # the loader's connection goes back to the pool before Redis is asked
    push.db.session.remove()
    mark = None
    if user_id is not None:
        try:
            mark = push.state.get_realtime().backplane.last_id(user_channel(user_id))
        except BackplaneError:
            pass  # the join reads the channel again, and says why it cannot
    setattr(g, _MARK, _Handshake(user_id, mark, asked))


def _marked(push: Any) -> _Handshake:
    """The user and their channel's mark, as read before the upgrade."""
    marked = g.pop(_MARK, None)
    if isinstance(marked, Exception):
        # the identity loader's, before the upgrade: said now, with a 1011 close
        raise marked
    if marked is None:  # not through the handshake hook
        return _Handshake(push.current_user_id(), None, _OwnChannelAsked())
    assert isinstance(marked, _Handshake)
    return marked


def _join_own_channel(
    realtime: Realtime, connection: Connection, user_id: str, handshake: _Handshake
) -> list[str]:
    """Join ``user:<id>``; the frames of what was published since the handshake's
    mark, or since the id the client asked from, named first when it asked."""
    channel = user_channel(user_id)
    asked = handshake.asked
    named = (
        [json.dumps({"op": "subscribed", "channel": channel, "own": True})] if asked.named else []
    )
    if asked.since is None or asked.channel != channel:
        # not asked, a first socket, or the client took another channel for its own
        # (another user signed in since): its ids say nothing of this one
        return named + _replayed(channel, realtime.join(connection, channel, seen=handshake.mark))
    try:
        replay = realtime.join(connection, channel, asked.since)
    except BackplaneError:
        return [*named, _error("unavailable", UNAVAILABLE, channel)]
    if replay is not None and (replay.events or replay.gap):
        connection.replayed()
    return named + _replayed(channel, replay)


def _error(code: str, message: str, channel: str | None = None) -> str:
    """An error frame; one that answers a join names its ``channel``, as a shut-out's
    does, so that a client following several can tell which join it answers."""
    frame = {"op": "error", "code": code, "message": message}
    if channel is not None:
        frame["channel"] = channel
    return json.dumps(frame)


#: frames a client's socket reads ahead of the handler's answers; past them it reads
#: no more until the handler has caught up (a reconnect's joins come in a burst)
MAX_UNREAD_FRAMES = 64
#: seconds between looks at a backlog of unread frames
UNREAD_POLL = 0.05

#: seconds the end of a websocket waits for the client's answer to the server's close
#: frame, before it shuts the socket down
CLOSE_HANDSHAKE_WAIT = 1.0


def serve(ws: Any) -> None:
    """Serve one websocket until it closes or is dropped; an error closes it with 1011."""
    try:
        _serve(ws)
    except (OSError, ConnectionClosed):
        pass  # the client went away, or was dropped and its socket shut down
    except Exception:
        # Raised on, this would become Flask's HTTP 500 answer, written into the
        # websocket stream; the client gets a close frame saying what happened.
        log.exception("flask-push: websocket handler failed; closing the socket with 1011")
        try:
            ws.close(CloseReason.INTERNAL_ERROR, "Internal error")
        except (OSError, ConnectionClosed):
            pass
    finally:
        if isinstance(ws.sock, _ReaderSocket):
            ws.sock.ended = True
        if ws.mode == "werkzeug":
            _end_the_stream(ws, request.environ["werkzeug.socket"])
        else:
            _finish_the_close(ws, ws.sock)


def _finish_the_close(ws: Any, sock: socket.socket) -> None:
    """Let the close handshake finish, then end the stream (a FIN), as RFC 6455 has
    the server do.

    simple-websocket's reader writes the answer to the client's close frame, or reads
    the client's answer to ours, and then ends: it is waited for, so that the close
    frame goes before the end and the answer is not left unread. A client that never
    answers (nor goes away) would keep the reader reading, and the socket open, for
    as long as it likes: after the wait the read side is shut down too, which ends
    the reader (and its ``close``, the stream).
    """
    ws.thread.join(CLOSE_HANDSHAKE_WAIT)
    how = socket.SHUT_RDWR if ws.thread.is_alive() else socket.SHUT_WR
    try:
        sock.shutdown(how)
    except OSError:
        pass  # shut down already (a dropped client), or gone


def _end_the_stream(ws: Any, sock: socket.socket) -> None:
    """Under Werkzeug's development server: finish the close handshake, then end the
    stream (a FIN), as RFC 6455 has the server do.

    Once the handler returns, Werkzeug writes an HTTP answer (flask-sock's: "HTTP/1.1
    200 OK ...") on the socket. In the websocket stream those bytes are a broken
    frame, which Chromium's console shows as "Invalid frame header" whenever a page
    closes its socket (``FlaskPush.disconnect()``) or the server closes it. With the
    stream ended, that write meets a broken pipe, which Werkzeug takes quietly for a
    client gone. (flask-sock keeps the other servers from writing an answer.)
    """
    try:
        if ws.connected:
            ws.close()  # what flask-sock does next: the server's close frame
    except (OSError, ConnectionClosed):
        pass
    _finish_the_close(ws, sock)


def _serve(ws: Any) -> None:
    push = current_app.extensions["push"].push
    # simple-websocket reads this attribute for every message: a bigger one is
    # refused with close code 1009 before it is buffered whole.
    ws.max_message_size = push.settings.ws_max_message_bytes
    most = push.settings.ws_max_per_user
    handshake = _marked(push)
    user_id = handshake.user_id
    realtime: Realtime = push.state.get_realtime()
    if user_id is None or most is None:
        _serve_admitted(ws, push, realtime, handshake)
        return
    if not realtime.hub.admit(user_id, most):
        push.db.session.remove()
        log.warning(
            "flask-push: refused a websocket of user %r: they hold %d in this process "
            "already (PUSH_WS_MAX_PER_USER)",
            user_id,
            most,
        )
        ws.close(
            CloseReason.POLICY_VIOLATION,
            f"Too many live connections: at most {most} for one user; close one and retry",
        )
        return
    try:
        _serve_admitted(ws, push, realtime, handshake)
    finally:
        realtime.hub.release(user_id)


def _serve_admitted(ws: Any, push: Any, realtime: Realtime, handshake: _Handshake) -> None:
    settings = push.settings
    user_id = handshake.user_id
    sock = ws.sock
    connection = Connection(ws.event, sock, settings.ws_queue_size, user_id)
    heartbeat = settings.ws_heartbeat or None
    connection.sent_at = time.monotonic()
    rate = settings.ws_rate_limit
    budget = None if rate is None else FrameBudget(rate[0], rate[1], connection.sent_at)
    if budget is not None:
        ws.ws = CountedControlFrames(ws.ws, budget)
    # simple-websocket's reader writes too (pongs, close frames): through the lock
    ws.sock = _ReaderSocket(sock, connection, ws, budget)

    def send(frame: str) -> None:
        # Not ws.send: simple-websocket writes with one sock.send(), which under
        # gevent writes what fits in the socket's buffer and drops the rest of the
        # frame (a replay to a client that reads slowly), breaking the stream.
        if not ws.connected:
            raise ConnectionClosed(ws.close_reason, ws.close_message)
        _write(sock, encode_frame(frame))
        connection.sent_at = time.monotonic()

    # Broadcasters write to the socket directly while the handler sleeps; the
    # handler holds the connection's lock whenever it writes, or joins a channel
    # (its "subscribed" and replay go before that channel's live events).
    lock = connection.lock
    refused = flooded = False
    try:
        with lock:
            # identity and authorizer callbacks may have used the db: give the
            # connection back now, not when the socket closes hours later
            push.db.session.remove()
            if user_id is not None:
                for frame in _join_own_channel(realtime, connection, user_id, handshake):
                    send(frame)
            # This frame lives as long as the socket, and there may be ten thousand:
            # it keeps nothing it no longer needs.
            del handshake
        while not connection.dropped:
            if heartbeat is None:
                timeout = None
            else:
                timeout = connection.sent_at + heartbeat - time.monotonic()
            if timeout is None or timeout > 0:
                connection.wake.wait(timeout)
            connection.wake.clear()
            if _too_big(ws):
                # simple-websocket wakes us for a frame over the limit before it has
                # sent its 1009 close and marked the socket closed: let its reader
                # finish that, then end (nothing would wake us again).
                ws.thread.join(1.0)
                break
            if budget is not None and budget.exceeded:
                flooded = True  # by ping frames, which the reader counts
                break
            with lock:
                _write_pending(sock, connection)
                # Most wake-ups are events out: look at the client's frames only when
                # there are some (or the socket closed, which receive() raises).
                while ws.input_buffer or not ws.connected:
                    frame = ws.receive(timeout=0)
                    if len(frame) > ws.max_message_size:
                        # It came before the limit was set (flask-sock builds the
                        # socket, and its reader runs, before this handler): refuse it
                        # as simple-websocket refuses later ones, once the lock is
                        # let go (the close frame's write takes it).
                        refused = True
                        break
                    if budget is not None:
                        verdict = budget.spend(time.monotonic())
                        if verdict is Verdict.CLOSE:
                            flooded = True
                            break
                        if verdict is Verdict.REFUSE:
                            send(_rate_limited(frame, budget))
                            continue
                    for reply in _answer(frame, connection, realtime, push, user_id):
                        send(reply)
                if refused or flooded:
                    break
                events = connection.take()
                if events:
                    _write(sock, b"".join(event.wire for event in events))
                    connection.sent_at = time.monotonic()
                if heartbeat is not None and time.monotonic() - connection.sent_at >= heartbeat:
                    send(PONG)
    finally:
        with lock:  # after a broadcaster's write in progress; none follow
            realtime.hub.leave_all(connection)
        if connection.dropped:
            log.info("flask-push: dropped a websocket client that did not keep up")
    if refused:
        ws.close(CloseReason.MESSAGE_TOO_BIG, "Message is too big")
    elif flooded and budget is not None:
        # once per socket: its refusals went to the client, frame by frame
        log.warning(
            "flask-push: closed the websocket of user %r: it kept sending after being "
            "refused for more than %s (PUSH_WS_RATE_LIMIT)",
            user_id,
            budget.said(),
        )
        ws.close(CloseReason.POLICY_VIOLATION, f"Too many frames: more than {budget.said()}")


class _ReaderSocket:
    """The socket as simple-websocket sees it once the handler runs.

    Its reader thread answers the client's ping frames, and close frames, with a
    ``send()`` of its own. Unlocked, that write could land inside a frame that a
    broadcaster left half-written in a full socket (see ``Connection.pending``),
    and break the client's stream. Here it waits for the connection's lock, writes
    the rest of that frame first, and then its own bytes whole.

    Its reader reads whatever the client sends into a list the handler empties. A
    handler that cannot answer (blocked writing to a client that does not read its
    answers, or a slow authorizer) would let that list grow without end; ``recv``
    waits while :data:`MAX_UNREAD_FRAMES` wait there, so the client's further frames
    stay in the kernel's buffers and its sends block. Everything else (``close``,
    ``fileno``) goes to the socket itself. Once the handler has ended, nothing
    will answer those frames: they are dropped as they come.

    Ping frames past the socket's ``budget`` are the reader's to count: once they
    exceed it, the reader wakes the handler to close the socket after it has
    written its answers to the frames it read (the pongs within the budget), or as
    it comes back to read when it had none.
    """

    __slots__ = ("_sock", "_connection", "_ws", "_budget", "ended")

    def __init__(
        self, sock: socket.socket, connection: Connection, ws: Any, budget: FrameBudget | None
    ) -> None:
        self._sock = sock
        self._connection = connection
        self._ws = ws
        self._budget = budget
        #: set by the handler as it ends
        self.ended = False

    def recv(self, size: int) -> bytes:
        self._wake_if_flooded()
        backlog = self._ws.input_buffer
        # Rare (a client far ahead of its answers): polled, so that each of ten
        # thousand sockets does not carry an event of its own for it. Not on
        # ``ws.connected``: the reader sets that again after each read that
        # brings no close frame, even once the server's close has gone.
        while len(backlog) >= MAX_UNREAD_FRAMES and not self.ended:
            time.sleep(UNREAD_POLL)
        if self.ended:
            backlog.clear()
        return self._sock.recv(size)

    def send(self, data: bytes) -> int:
        connection = self._connection
        with connection.lock:
            _write_pending(self._sock, connection)
            _write(self._sock, data)
        self._wake_if_flooded()
        return len(data)

    def _wake_if_flooded(self) -> None:
        if self._budget is not None and self._budget.exceeded:
            self._connection.wake.set()  # the handler closes the socket

    def close(self) -> None:
        # The reader's last act, once the close handshake is over (or the client
        # gone): the end of the stream goes with it. Under gevent the reader's socket
        # is a copy of the server's, which the server keeps open after the handler
        # (until the client closes): without the FIN, a client that never answers
        # our close frame would never see the stream end.
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # shut down already, or gone
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _too_big(ws: Any) -> bool:
    """Is simple-websocket refusing a frame over ``max_message_size``?"""
    limit = ws.max_message_size
    return bool(limit) and ws.incoming_message_len > limit


def _write_pending(sock: socket.socket, connection: Connection) -> None:
    """Write the rest of a frame a broadcaster began: it goes before anything else.
    The caller holds the connection's lock."""
    if connection.pending:
        _write(sock, connection.pending)
        connection.pending = b""
        connection.sent_at = time.monotonic()


def _write(sock: socket.socket, data: bytes) -> None:
    """``sock.sendall(data)`` without gevent's extra system call per write (it asks
    for the send buffer's size each time); a send blocks only on a full buffer."""
    view = memoryview(data)
    while view:
        view = view[sock.send(view) :]


def _answer(
    frame: Any, connection: Connection, realtime: Realtime, push: Any, user_id: str | None
) -> list[str]:
    """The frames that answer one frame from the client."""
    message = _parse(frame)
    if message is None:
        return [_error("bad_request", "Send text frames of JSON objects with an 'op'.")]
    op = message.get("op")
    if op == "ping":
        return [_pong(message)]
    if op not in ("subscribe", "unsubscribe"):
        # only a string is echoed: repr() of a deeply nested list would recurse
        shown = repr(op) if isinstance(op, str) else "value"
        return [_error("bad_request", f"Unknown op {shown}; use subscribe, unsubscribe or ping.")]
    try:
        channel = channel_name(message.get("channel"))
    except ValidationError:
        return [_error("bad_request", f"'channel' {CHANNEL_RULE}.")]
    if op == "unsubscribe":
        realtime.hub.leave(connection, channel)
        return []
    since = message.get("since")
    if since is not None and not _whole(since):
        return [_error("bad_request", "'since' must be a whole number of at least 0.", channel)]
    limit = hub_module.MAX_CHANNELS
    if channel not in connection.last_ids and len(connection.last_ids) >= limit:
        return [
            _error(
                "too_many_channels",
                f"A socket may follow at most {limit} channels at once; unsubscribe from "
                "one first.",
                channel,
            )
        ]
    if not _may_join(push, user_id, channel):
        # one it follows already (asked again after its access was taken away): it
        # leaves it, so that nothing more of it reaches a socket told it may not join
        realtime.hub.leave(connection, channel)
        return [_error("forbidden", push.join_refusal(channel), channel)]
    subscribed = json.dumps({"op": "subscribed", "channel": channel})
    if since is not None and not connection.may_replay(time.monotonic()):
        # replays asked for again and again: the client is told to reload its
        # state instead, as when events are no longer kept
        realtime.join(connection, channel)
        return _unless_shut_out(push, realtime, connection, user_id, channel) or [
            subscribed,
            gap_frame(channel),
        ]
    try:
        replay = realtime.join(connection, channel, since)
    except BackplaneError:
        return _unless_shut_out(push, realtime, connection, user_id, channel) or [
            subscribed,
            _error("unavailable", UNAVAILABLE, channel),
        ]
    if refused := _unless_shut_out(push, realtime, connection, user_id, channel):
        return refused
    if replay is not None and (replay.events or replay.gap):
        connection.replayed()
    return [subscribed, *_replayed(channel, replay)]


def _may_join(push: Any, user_id: str | None, channel: str) -> bool:
    """``push.may_join``, read in a transaction of its own; a failure says no."""
    try:
        return bool(push.may_join(user_id, channel))
    except Exception:
        log.exception("flask-push: channel_authorizer failed for %r", channel)
        return False
    finally:
        push.db.session.remove()


def _unless_shut_out(
    push: Any, realtime: Realtime, connection: Connection, user_id: str | None, channel: str
) -> list[str] | None:
    """For an activity's channel, ask again once joined: a call that left the user out
    may have committed after the first answer, and its shut-out have passed this
    process before the socket was on the channel. Then the socket leaves it unseen:
    the handler holds the connection, so nothing of the channel was written yet, and
    what waits in its queue is dropped with the channel. Another channel has no
    shut-out to miss, and costs no second question."""
    if not channel.startswith(ACTIVITY_CHANNEL_PREFIX) or _may_join(push, user_id, channel):
        return None
    realtime.hub.leave(connection, channel)
    return [_error("forbidden", push.join_refusal(channel), channel)]


def _rate_limited(frame: Any, budget: FrameBudget) -> str:
    """The refusal of a frame over the socket's budget, naming the channel a join or
    a leave names, so that the client knows which one to send again."""
    message = _parse(frame)
    channel = message.get("channel") if message is not None else None
    return _error(
        "rate_limited",
        f"This socket sent more than {budget.said()}; this frame was not acted on. Send it "
        "again later, more slowly: a socket that keeps on sending is closed.",
        channel if isinstance(channel, str) and _is_channel(channel) else None,
    )


def _is_channel(name: str) -> bool:
    try:
        channel_name(name)
    except ValidationError:
        return False
    return True


def _whole(value: Any, below: int | None = None) -> bool:
    """Is ``value`` a whole number of at least 0 (and under ``below``)? JSON's
    ``true`` is not 1, and ``1.0`` is not one either."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return False
    return below is None or value < below


def _pong(ping: dict[str, Any]) -> str:
    """The answer to a ping: its ``id`` given back, so that a client tells the answer
    to its ping from a heartbeat's pong (which has none)."""
    if "id" not in ping:
        return PONG
    id = ping["id"]
    if not _whole(id, below=MAX_PING_ID):
        return _error("bad_request", "A ping's 'id' must be a whole number from 0 below 2^53.")
    return json.dumps({"op": "pong", "id": id})


def _replayed(channel: str, replay: Replay | None) -> list[str]:
    """The frames of a join's replay: a gap first where some of it is lost."""
    if replay is None:
        return []
    frames = [gap_frame(channel)] if replay.gap else []
    frames.extend(event.frame for event in replay.events if sendable(event))
    return frames


def _parse(frame: Any) -> dict[str, Any] | None:
    """A client's frame as a JSON object, or None when it is not one."""
    if not isinstance(frame, str):
        return None
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
        return None
    return message if isinstance(message, dict) else None
