"""How many frames a websocket client may send (``PUSH_WS_RATE_LIMIT``).

Each frame a client sends costs the server its handler's time, and a join may cost
a question to the channel authorizer (the database) and to the backplane (Redis): a
client that sends thousands a second, buggy or hostile, would keep a core busy and
slow every other socket of the process. A token bucket lets a burst through (a
client that reconnects joins each of its channels again at once) and then as many
per period; past that, frames are refused, and a client that keeps on sending
after it was told is closed.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from typing import Any

from wsproto.events import Event, Ping, Pong

#: frames a client may send past the limit before it is closed: those it sent before
#: the first refusal reached it are on their way, and each gets its own refusal
GRACE = 100


class Verdict(enum.Enum):
    ANSWER = "answer"  # act on the frame
    REFUSE = "refuse"  # refuse it with a ``rate_limited`` error
    CLOSE = "close"  # close the socket: it kept on after its refusals


class FrameBudget:
    """One socket's token bucket: ``amount`` frames at once, then ``amount`` per
    ``seconds``. A refused frame costs a token too, so a client that keeps sending
    after its refusals sinks below the refusals' :data:`GRACE` and is closed, while
    one that slows down is answered again once the bucket has refilled."""

    __slots__ = ("amount", "seconds", "exceeded", "_per_second", "_tokens", "_at")

    def __init__(self, amount: int, seconds: int, now: float) -> None:
        self.amount = amount
        self.seconds = seconds
        self._per_second = amount / seconds
        self._tokens = float(amount)
        self._at = now
        #: set once a verdict was CLOSE, by whichever thread spent the frame
        self.exceeded = False

    def spend(self, now: float) -> Verdict:
        """The verdict on one frame received at ``now`` (``time.monotonic()``)."""
        tokens = min(float(self.amount), self._tokens + (now - self._at) * self._per_second)
        self._at = now
        self._tokens = tokens - 1
        if self._tokens >= 0:
            return Verdict.ANSWER
        if self._tokens >= -GRACE:
            return Verdict.REFUSE
        self.exceeded = True
        return Verdict.CLOSE

    def said(self) -> str:
        """The limit as a person reads it: "1200 frames a minute"."""
        per = {1: "a second", 60: "a minute", 3600: "an hour", 86400: "a day"}
        return f"{self.amount} frames {per.get(self.seconds, f'per {self.seconds} seconds')}"


class CountedControlFrames:
    """simple-websocket's protocol object (wsproto's ``WSConnection``) as its reader
    sees it once the handler runs: the ping and pong frames it reads spend the
    socket's budget too.

    The reader answers a ping frame itself, without the handler, so a client could
    send hundreds of thousands a second past any budget the handler keeps. A ping
    over the budget goes unanswered; past the refusals' :data:`GRACE` the budget is
    ``exceeded``, and the socket's reader wakes the handler to close it once it has
    written the pongs of that read (see ``_ReaderSocket.recv``): woken here, the
    handler's close frame could go out before them. The reader and the handler may
    spend at the same moment and one frame go uncounted: the budget stays a bound,
    just not exact. Everything else goes to the protocol object itself.
    """

    __slots__ = ("_protocol", "_budget")

    def __init__(self, protocol: Any, budget: FrameBudget) -> None:
        self._protocol = protocol
        self._budget = budget

    def events(self) -> Iterator[Event]:
        for event in self._protocol.events():
            if isinstance(event, (Ping, Pong)):
                if self._budget.spend(time.monotonic()) is not Verdict.ANSWER:
                    continue
            yield event

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)
