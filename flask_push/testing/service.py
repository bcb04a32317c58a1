"""What every fake push service shares, whatever protocol it speaks.

A fake runs on ``127.0.0.1`` in a background thread until :meth:`FakeService.stop`,
records what it accepted (and lets a test :meth:`~FakeService.wait` for it), answers
with the failures a test scripted, and can be slow (:attr:`~FakeService.delay`) or
hang (:meth:`~FakeService.hold`). Each fake keeps only its protocol: how a request
is parsed, checked and answered. The server model is its own too (threads of
``http.server`` for Web Push and FCM, an asyncio loop for APNs' HTTP/2), so the base
asks it only to :meth:`~FakeService._open` and :meth:`~FakeService._close`, and is
told when a request arrives and when it is answered.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

__all__ = ["FakeService", "HungUp", "ScriptedFailure"]

#: what a fake records for each request it accepted
Received = TypeVar("Received")
_Service = TypeVar("_Service", bound="FakeService[Any]")


@dataclass(frozen=True)
class ScriptedFailure:
    """An error answer a test asked for with a fake's ``fail_next``."""

    status: int
    #: the service's error code or reason (FCM's ``QUOTA_EXCEEDED``, APNs' ``TooManyRequests``)
    reason: str | None = None
    #: the ``Retry-After`` to send: seconds, or an HTTP date
    retry_after: int | str | None = None
    #: the error message, for a protocol that has one besides the reason
    message: str | None = None


class HungUp(Exception):
    """Raised in a server thread holding a request when the fake stops: hang up."""


@dataclass
class _Scripted:
    failure: ScriptedFailure
    #: the only target it applies to (a subscriber id, a device token); None for any
    target: str | None
    remaining: int


class FakeService(ABC, Generic[Received]):
    """A local push service running in a background thread until :meth:`stop`.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.

    .. versionadded:: 0.1
    """

    #: the address it listens on
    host: ClassVar[str] = "127.0.0.1"
    #: whether it may start again once stopped. A fake whose subscriptions or
    #: credentials name its port keeps that port, and serves it once.
    restartable: ClassVar[bool] = False
    #: what :meth:`wait` counts, as its error message says it
    noun: ClassVar[str] = "requests"

    def __init__(self, *, delay: float = 0.0) -> None:
        #: Seconds to wait before answering each request; may be changed while running.
        #: Concurrent requests wait side by side, as behind a slow network.
        self.delay = delay
        # One lock for all of a fake's state; re-entrant, so a fake's own code may
        # hold it while calling the helpers below.
        self._cond = threading.Condition(threading.RLock())
        self._received: list[Received] = []
        self._script: list[_Scripted] = []
        self._port: int | None = None
        self._running = False
        self._holding = False
        self._passes = 0
        self._hanging_up = False
        self._in_flight = 0
        self._peak_in_flight = 0

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._running else "not running"
        return f"<{type(self).__name__} {where}>"

    # -- lifecycle --------------------------------------------------------------------

    def start(self: _Service) -> _Service:
        """Serve on a free port in a background thread; returns the fake, started."""
        name = type(self).__name__
        if self._port is not None and not self.restartable:
            raise RuntimeError(f"a {name} can be started only once: what it issued names its port")
        if self._running:
            raise RuntimeError(f"{name} is already running")
        self._port = self._open()
        self._running = True
        return self

    def stop(self) -> None:
        """Stop serving and close the connections, hanging up on held requests;
        stopping twice is harmless. What was recorded stays readable."""
        if not self._running:
            return
        with self._cond:
            self._hanging_up = True  # no server thread stays blocked on a held request
            self._cond.notify_all()
        self._close()
        with self._cond:
            # Those woken are gone within moments: then nothing is in flight any more.
            self._cond.wait_for(lambda: self._in_flight == 0, timeout=10)
            self._hanging_up = False
        self._running = False
        if self.restartable:
            self._port = None

    def __enter__(self: _Service) -> _Service:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running: call start() first")
        return self._port

    @abstractmethod
    def _open(self) -> int:
        """Bind a free port on :attr:`host`, serve it in a background thread, return it."""

    @abstractmethod
    def _close(self) -> None:
        """Stop the server thread and close every connection."""

    # -- what arrived -----------------------------------------------------------------

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[Received]:
        """Wait until at least ``count`` requests were accepted; return all accepted so far.

        :raises TimeoutError: when fewer arrived within ``timeout`` seconds.
        """
        return self._wait_for(lambda: self._received, count, timeout, repr(self))

    def reset(self) -> None:
        """Forget what was received, the scripted failures still pending and the
        peak of :attr:`in_flight`."""
        with self._cond:
            self._received.clear()
            self._script.clear()
            self._peak_in_flight = self._in_flight

    def _record(self, item: Received) -> None:
        """Keep an accepted request's record and wake who waits for it."""
        with self._cond:
            self._received.append(item)
            self._cond.notify_all()

    def _recorded(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    def _wait_for(
        self, items: Callable[[], Sequence[Received]], count: int, timeout: float, who: str
    ) -> list[Received]:
        """Wait until ``items()`` (read under the lock) has ``count``; return a copy."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(items()) >= count, timeout):
                raise TimeoutError(
                    f"{who} received {len(items())} of {count} {self.noun} within {timeout:g} s"
                )
            return list(items())

    # -- scripted failures ------------------------------------------------------------

    def _script_failure(self, failure: ScriptedFailure, *, target: str | None, times: int) -> None:
        """Queue ``failure`` for the next ``times`` requests to ``target`` (or to any)."""
        if not 400 <= failure.status <= 599:
            raise ValueError(f"a failure status is 4xx or 5xx, not {failure.status}")
        if times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        with self._cond:
            self._script.append(_Scripted(failure, target, times))

    def _take_failure(self, target: str | None) -> ScriptedFailure | None:
        """The first scripted failure due for a request to ``target``, used up once.

        Failures are used in the order they were scripted; one scripted for a target
        skips requests to others.
        """
        with self._cond:
            for entry in self._script:
                if entry.target is None or entry.target == target:
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._script.remove(entry)
                    return entry.failure
        return None

    # -- slowness: hold, release, and what is in flight -------------------------------

    def hold(self) -> None:
        """Leave every request unanswered from now on, until :meth:`release`: a
        service that hangs (:meth:`stop` hangs up on them). With :attr:`in_flight`, a
        test sees how many requests a client keeps open at once, and its timeouts,
        without timing anything."""
        with self._cond:
            self._holding = True
            self._passes = 0

    def release(self, count: int | None = None) -> None:
        """Answer ``count`` of the held requests (and hold the next ones still), or,
        without ``count``, every held request and stop holding."""
        with self._cond:
            if count is None:
                self._holding, self._passes = False, 0
            else:
                self._passes += count
            self._cond.notify_all()
        self._wake()

    @property
    def in_flight(self) -> int:
        """Requests that arrived and are not answered yet (delayed, or held)."""
        with self._cond:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most requests in flight at once since the start (or :meth:`reset`)."""
        with self._cond:
            return self._peak_in_flight

    def wait_in_flight(self, count: int, timeout: float = 5.0) -> int:
        """Wait until at least ``count`` requests are in flight; return how many are.

        :raises TimeoutError: when fewer are within ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._in_flight >= count, timeout):
                raise TimeoutError(
                    f"{self!r} has {self._in_flight} of {count} requests in flight "
                    f"after {timeout:g} s"
                )
            return self._in_flight

    def _arrive(self) -> None:
        """A request to answer arrived (call :meth:`_depart` once it is answered)."""
        with self._cond:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            self._cond.notify_all()

    def _depart(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _may_answer(self) -> bool:
        """Whether a request may be answered now; takes one of :meth:`release`'s passes."""
        with self._cond:
            if not self._holding:
                return True
            if self._passes > 0:
                self._passes -= 1
                return True
            return False

    @contextmanager
    def _answering(self) -> Iterator[Callable[[], None]]:
        """Around answering one request, for a server with a thread per request: it
        counts in flight, and that thread waits the delay and a hold out.

        Yields ``land``: called, with the lock held, where the fake records what the
        request delivered, the request leaves :attr:`in_flight` in the same moment
        (so that a test never sees it in both); else it leaves on the way out.

        :raises HungUp: when the fake stops meanwhile: close without an answer.
        """
        landed = False

        def land() -> None:
            nonlocal landed
            with self._cond:
                if not landed:
                    landed = True
                    self._depart()

        self._arrive()
        try:
            with self._cond:
                if self.delay > 0:
                    self._cond.wait_for(lambda: self._hanging_up, self.delay)
                self._cond.wait_for(lambda: self._hanging_up or self._may_answer())
                if self._hanging_up:
                    raise HungUp
            yield land
        finally:
            land()

    def _wake(self) -> None:
        """Called after :meth:`release`: a server that cannot block a thread on a held
        request (an event loop) answers the ones it parked here."""
