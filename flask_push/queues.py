"""The delivery queues, behind one small protocol: :class:`Queue`.

A send commits its message and deliveries first, then hands the message's id to the
app's queue, which decides when and where the deliveries go out:

- :class:`InlineQueue` (``PUSH_QUEUE = "inline"``, and every suppressed send):
  in the sending thread, before ``send()`` returns;
- :class:`ThreadWorker` (``"thread"``): a daemon thread of the app's own process;
- :class:`~flask_push.celery_queue.CeleryQueue` (``"celery"``): Celery workers.

The outbox is the source of truth for all three: a queue only says "look now".

The ``thread`` queue: one daemon thread per app and process, started by the first
``send()`` (so scripts and CLI commands deliver too) or the first request the
process serves (so a web process delivers what others queued, and what was due
when it restarted), woken by each send and otherwise polling about every second
for retries and scheduled messages that came due. After a fork the child starts
its own worker on its first send or request. When the process exits, its worker
first delivers what is due, for up to :data:`EXIT_DRAIN` seconds, so that a script
that sends and ends has sent; then it lets what is on the network finish and hands
the rest back to the outbox.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook must come first, see below
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from flask import Flask

from .database import first_line, missing_tables_sentence, refused_writes
from .dispatch import Dispatcher

logger = logging.getLogger("flask_push")

#: seconds between two looks at the outbox when no send wakes the worker
POLL_INTERVAL = 1.0
#: seconds a ``thread`` worker goes on delivering what is due when its process exits
EXIT_DRAIN = 5.0
#: seconds it then gives the pushes on the network to finish
EXIT_FINISH = 5.0

_running: weakref.WeakSet[ThreadWorker] = weakref.WeakSet()


class Queue(Protocol):
    """What a send needs of a delivery queue."""

    def enqueue(self, message_id: str, recipients: int, *, scheduled: bool = False) -> None:
        """Have the deliveries of ``message_id`` (committed, ``recipients`` of them)
        sent; ``scheduled`` when they are due later, which the workers' polling
        covers. A broker that cannot be reached is logged, not raised: the rows
        are durable and the workers' polling finds them."""

    def shutdown(self) -> None:
        """Let what is on the network finish, and close the connections."""


class InlineQueue:
    """The ``inline`` queue: deliver in the calling thread.

    Also the queue of suppressed sends (tests record them at once), of
    ``push.dispatch_due()`` and of ``flask push worker`` on the thread and inline
    queues. Its :class:`Dispatcher` is made on first use, and again after a close.
    """

    def __init__(self, make_dispatcher: Callable[[], Dispatcher]) -> None:
        self._make_dispatcher = make_dispatcher
        self._dispatcher: Dispatcher | None = None
        self._lock = threading.Lock()

    @property
    def dispatcher(self) -> Dispatcher:
        with self._lock:
            if self._dispatcher is None or self._dispatcher.closed:
                self._dispatcher = self._make_dispatcher()
            return self._dispatcher

    def enqueue(self, message_id: str, recipients: int, *, scheduled: bool = False) -> None:
        self.run_once(message_id)

    def run_once(
        self, message_id: str | None = None, stop: Callable[[], bool] | None = None
    ) -> int:
        """Deliver what is due now (of ``message_id`` only, when given) until nothing
        is left or ``stop()`` says so; returns how many deliveries were claimed.
        Without ``message_id``, the inbox items of scheduled messages that came due
        are written too, before it returns."""
        dispatcher = self.dispatcher
        try:
            claimed = dispatcher.run_until_idle(message_id=message_id, stop=stop)
        except RuntimeError:
            if not dispatcher.closed:
                raise
            # closed by a shutdown() on another thread since it was taken: a fresh
            # one delivers, as for a send after the shutdown
            dispatcher = self.dispatcher
            claimed = dispatcher.run_until_idle(message_id=message_id, stop=stop)
        if message_id is None:
            dispatcher.settle_inbox()
        return claimed

    def shutdown(self) -> None:
        with self._lock:
            dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            dispatcher.close()


#: ``(handled, outcomes by status)``: what a run of a dispatcher that handled any
#: deliveries did, for ``flask push worker`` to say (of its Celery tasks and sweep)
Report = Callable[[int, Counter[str]], None]


def run_reported(dispatcher: Dispatcher, run: Callable[[], int], report: Report | None) -> int:
    """``run()`` (a run of ``dispatcher``), then what it handled to ``report``, if
    any and when given; returns how many deliveries it claimed."""
    if report is None:
        return run()
    before = Counter(dispatcher.written)
    handled = run()
    if handled:
        report(handled, Counter(dispatcher.written) - before)
    return handled


class ThreadWorker:
    """A background thread running a :class:`Dispatcher` in an app context.

    ``yield_to``, when given, says whether other dispatchers of this process are
    busy (the Celery tasks beside the sweep of a ``flask push worker``). While it
    is true, a round delivers one batch and the worker waits for the next poll: a
    second event loop in the same process only competes with theirs for the GIL.
    A round in progress stops when it turns true. One batch per poll keeps what
    only this worker delivers (retries, scheduled messages) moving meanwhile.
    """

    def __init__(
        self,
        app: Flask,
        make_dispatcher: Callable[[], Dispatcher],
        yield_to: Callable[[], bool] | None = None,
    ) -> None:
        self.app = app
        self._make_dispatcher = make_dispatcher
        self._yield_to = yield_to
        #: told what each round that handled deliveries did (``flask push worker``'s)
        self.report: Report | None = None
        self.pid = os.getpid()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # set by drain(): rounds stop at this monotonic time, and the next round
        # that finds nothing due says so through _drained
        self._drain_until: float | None = None
        self._drained = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"flask-push-worker:{app.name}", daemon=True
        )

    def start(self) -> ThreadWorker:
        self._thread.start()
        _running.add(self)
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll."""
        self._wake.set()

    def enqueue(self, message_id: str, recipients: int, *, scheduled: bool = False) -> None:
        """The worker delivers every due row, whatever its message: wake it."""
        self.wake()

    def shutdown(self) -> None:
        self.stop()

    def stop_soon(self) -> None:
        """Ask the thread to end as :meth:`stop` does, without waiting for it."""
        self._stopping.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Let the pushes on the network finish (and hand back the claimed ones not
        sent yet), close the providers and end the thread."""
        self.stop_soon()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        _running.discard(self)

    def drain(self, until: float) -> None:
        """Deliver what is due until nothing is, or the monotonic time ``until``
        (then :meth:`drained` says so): what a process does as it exits."""
        self._drain_until = until
        self._wake.set()

    def drained(self, until: float) -> None:
        """Wait, until the monotonic time ``until`` at most, for :meth:`drain` to end."""
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._drained.wait(max(0.0, until - time.monotonic()))

    def _past_drain(self) -> bool:
        until = self._drain_until
        return until is not None and time.monotonic() >= until

    def _run(self) -> None:
        with self.app.app_context():
            dispatcher = self._make_dispatcher()
            said = None  # why the last round failed, as last logged
            try:
                while not self._stopping.is_set():
                    self._wake.clear()
                    try:
                        more = self.run_round(dispatcher)
                        said = None
                    except Exception as err:  # keep the worker alive; rows stay queued
                        # tables not made yet, writes refused: one line that says what
                        # to do; anything else its traceback. Each once while it lasts,
                        # not every round.
                        push = self.app.extensions["push"].push
                        sentence = missing_tables_sentence(push) or refused_writes(err)
                        why = sentence or f"{type(err).__name__}: {first_line(err)}"
                        if why != said:
                            said = why
                            if sentence is None:
                                logger.exception(
                                    "flask-push: a delivery round failed (said again only "
                                    "when the reason changes)"
                                )
                            else:
                                logger.error(
                                    "flask-push: nothing is delivered until then: %s", sentence
                                )
                        more = False
                    # nothing due, and no send since the round began: drained
                    if not more and self._drain_until is not None and not self._wake.is_set():
                        self._drained.set()
                    if not more:
                        self._wake.wait(POLL_INTERVAL)
            finally:
                dispatcher.close()

    def run_round(self, dispatcher: Dispatcher) -> bool:
        """Deliver what is due: until nothing is, or one batch while others of this
        process are busy (see the class). Returns whether to look again at once."""
        busy = self._yield_to
        if busy is not None and busy():
            run_reported(dispatcher, dispatcher.run_once, self.report)
            return False
        stopping = self._stopping.is_set
        past = self._past_drain
        stop = (
            (lambda: stopping() or past())
            if busy is None
            else (lambda: stopping() or past() or busy())
        )
        handled = run_reported(
            dispatcher, lambda: dispatcher.run_until_idle(stop=stop), self.report
        )
        return handled > 0


def _stop_all() -> None:
    """At interpreter exit, have workers deliver what is due (for a while), let them
    finish the pushes they have on the network, hand back the rest, and close
    connections."""
    workers = [worker for worker in list(_running) if worker.pid == os.getpid()]
    # all at once: several apps' workers take EXIT_DRAIN together, not one after another
    until = time.monotonic() + EXIT_DRAIN
    for worker in workers:
        worker.drain(until)
    for worker in workers:
        worker.drained(until)
    finish = time.monotonic() + EXIT_FINISH
    for worker in workers:
        worker.stop_soon()
    for worker in workers:
        worker.stop(max(0.0, finish - time.monotonic()))


# Threading's exit hooks run before atexit's, last registered first, and the one
# concurrent.futures.thread registers on import makes every executor refuse new
# work: FCM's pool, asyncio's default one. It is imported here (concurrent.futures
# would load it lazily, later), so that the hook registered after it, which stops
# the workers, runs before it: what is in flight finishes instead of failing for
# want of a thread.
_register = getattr(threading, "_register_atexit", atexit.register)
_register(_stop_all)
