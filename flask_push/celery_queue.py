"""The ``celery`` queue: Celery workers deliver, as many as you run, on any host.

The outbox stays the source of truth. A task carries a message id, never rows or
objects: it claims that message's due deliveries with the dispatcher's lease, batch
after batch, until none is left for it. So a lost task (the broker was down at send
time, a worker died before acknowledging) loses nothing, and a task that runs twice
finds nothing left to claim. What no task covers (retries with backoff, scheduled
messages, sends whose tasks could not be queued, leases that ran out) is swept up
about every second by each ``flask push worker`` process, which runs the thread
queue's poller beside the Celery worker: while tasks run in its process, a batch a
second, so that it does not compete with them. Claims are leased (with ``SKIP
LOCKED`` on PostgreSQL), so any number of those processes may run at once.

Celery is imported only when an app uses this queue: it is an optional dependency.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from celery.signals import worker_shutting_down
from flask import Flask

from .config import PushSettings
from .dispatch import Dispatcher
from .queues import Report, run_reported

logger = logging.getLogger("flask_push")

#: the one task: deliver a message's due deliveries (or any due ones) until none is left
TASK_NAME = "flask_push.deliver"
#: the most tasks one send queues; each delivers batches until its message is done
MAX_TASKS_PER_SEND = 16
#: seconds a send waits to reach the broker before leaving delivery to the sweep
BROKER_CONNECT_TIMEOUT = 2.0
#: seconds a Redis broker may take to answer one command: one that accepts the
#: connection and never answers (a TLS-only Redis reached with redis://, a half-open
#: connection) would otherwise hold a send, and the request that made it, for ever
BROKER_ANSWER_TIMEOUT = 2.0
#: after a send could not reach the broker, how long the next sends of the process
#: leave their deliveries to the sweep at once instead of each waiting for a broker
#: that hangs (up to three of BROKER_ANSWER_TIMEOUT), as every request that sends would
BROKER_PAUSE = 5.0


def tasks_for(targets: int, batch: int) -> int:
    """How many tasks a send of ``targets`` deliveries queues: one per batch, so that
    idle workers share a large fan-out, but at most :data:`MAX_TASKS_PER_SEND`."""
    if targets <= 0:
        return 0
    return min(math.ceil(targets / max(batch, 1)), MAX_TASKS_PER_SEND)


class CeleryQueue:
    """One app's Celery app, its delivery task, and the dispatchers its tasks use.

    Made on first use in each process that sends or works (``PushState.get_celery()``).
    Each worker thread keeps a :class:`Dispatcher` of its own, so the providers'
    connection pools stay warm from one task to the next.
    """

    def __init__(
        self, app: Flask, settings: PushSettings, make_dispatcher: Callable[[], Dispatcher]
    ) -> None:
        if not settings.celery_broker_url:
            raise RuntimeError("the celery queue needs PUSH_CELERY_BROKER_URL")
        self.app = app
        self.queue = settings.celery_queue
        #: deliveries a task claims at a time; a send queues one task per batch
        self.batch = settings.delivery_batch
        self._make_dispatcher = make_dispatcher
        self._local = threading.local()
        self._dispatchers: list[tuple[int, Dispatcher]] = []
        self._lock = threading.Lock()
        #: tasks running in this process now
        self._running = 0
        #: set when this process's Celery worker begins its warm shutdown (SIGTERM,
        #: Ctrl-C): its tasks then stop after the pushes on the network
        self._stopping = threading.Event()
        #: when (monotonic) a send last failed to reach the broker; None: it answered
        self._unreached_at: float | None = None
        #: a send is asking the broker again after the pause; the others still rest
        self._asking = False
        #: told what each task that handled deliveries did (``flask push worker``'s)
        self.report: Report | None = None
        #: the Celery app; not set as Celery's current app, so a host's own is untouched
        self.celery = Celery(
            f"flask_push.{app.name}", broker=settings.celery_broker_url, set_as_current=False
        )
        self.celery.conf.update(_celery_config(settings.celery_broker_url, self.queue))

        def deliver(message_id: str | None = None) -> int:
            return self.run(message_id)

        #: the delivery task; its only argument is a message id (or None: any due row)
        self.deliver_task: Any = self.celery.task(
            name=TASK_NAME, acks_late=True, ignore_result=True
        )(deliver)

    # -- sending side ------------------------------------------------------------------

    def enqueue(self, message_id: str, recipients: int, *, scheduled: bool = False) -> None:
        """Queue the delivery tasks of a message whose rows are committed (none for a
        ``scheduled`` one: the workers' sweep sends it when due).

        Never raises for the broker: the rows are durable, so when it cannot be
        reached this logs a warning and the workers' sweep delivers them instead.
        """
        count = 0 if scheduled else tasks_for(recipients, self.batch)
        if not count or self._resting(message_id):
            return
        try:
            with self.celery.producer_or_acquire() as producer:
                for _ in range(count):
                    self.deliver_task.apply_async(
                        (message_id,), queue=self.queue, producer=producer
                    )
        except Exception as err:  # noqa: BLE001 - any broker failure: the sweep delivers
            with self._lock:
                self._unreached_at, self._asking = time.monotonic(), False
            logger.warning(
                "flask-push: could not queue delivery tasks for message %s on the Celery "
                "broker (%s); its deliveries stay queued and a `flask push worker` "
                "delivers them within about a second of running, as it does those of "
                "this process's sends for the next %g s, which do not ask the broker",
                message_id,
                err,
                BROKER_PAUSE,
            )
        else:
            with self._lock:
                self._unreached_at, self._asking = None, False

    def _resting(self, message_id: str) -> bool:
        """Is the broker left alone for this send (a send found it unreachable less
        than :data:`BROKER_PAUSE` ago, or another is asking it again now)?"""
        with self._lock:
            unreached_at = self._unreached_at
            if unreached_at is None:
                return False
            ago = time.monotonic() - unreached_at
            if ago >= BROKER_PAUSE and not self._asking:
                self._asking = True  # this send asks; the others rest until it knows
                return False
        logger.info(
            "flask-push: message %s left to the workers' sweep: the Celery broker could "
            "not be reached %.1f s ago",
            message_id,
            ago,
        )
        return True

    # -- working side ------------------------------------------------------------------

    def run(self, message_id: str | None = None) -> int:
        """What a task does: deliver the due deliveries (of ``message_id`` only, when
        given) in batches until none is left; returns how many were claimed."""
        with self._lock:
            self._running += 1
        try:
            with self.app.app_context():
                # A task keeps claiming batches until its message is done: a fan-out
                # would otherwise outlast any supervisor's grace period, and the kill
                # that ends it would strand the pushes on the network. Stopped, it
                # hands the rest back (queued, for any worker's tasks or sweep).
                dispatcher = self._dispatcher()
                return run_reported(
                    dispatcher,
                    lambda: dispatcher.run_until_idle(
                        message_id=message_id, stop=self._stopping.is_set
                    ),
                    self.report,
                )
        finally:
            with self._lock:
                self._running -= 1

    def busy(self) -> bool:
        """Are tasks running in this process? The sweep beside them yields to them."""
        return self._running > 0

    def _dispatcher(self) -> Dispatcher:
        """This thread's dispatcher, made on its first task (again after a fork)."""
        pid = os.getpid()
        dispatcher: Dispatcher | None = getattr(self._local, "dispatcher", None)
        if dispatcher is None or dispatcher.closed or getattr(self._local, "pid", None) != pid:
            dispatcher = self._make_dispatcher()
            self._local.dispatcher, self._local.pid = dispatcher, pid
            with self._lock:
                self._dispatchers.append((pid, dispatcher))
        return dispatcher

    def run_worker(self, *, concurrency: int, loglevel: str) -> int:
        """Run a Celery worker in the foreground, consuming this app's delivery queue
        until Ctrl-C or SIGTERM (its tasks then finish the pushes on the network and
        hand the rest of their message back); returns its exit code.

        Its pool is threads: delivery waits on the network, and threads share the
        app's database engine, which a forked pool would have to set up again.
        """
        hostname = f"flask-push-{os.getpid()}@{socket.gethostname()}"
        self._stopping.clear()  # a worker run again in this process starts afresh

        def shutting_down(sender: Any = None, **_: Any) -> None:
            if sender == hostname:
                self._stopping.set()

        worker_shutting_down.connect(shutting_down, weak=False)
        worker = self.celery.Worker(
            hostname=hostname,
            pool_cls="threads",
            concurrency=concurrency,
            loglevel=loglevel,
            queues=[self.queue],
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=True,
            quiet=True,
        )
        try:
            worker.start()
        finally:
            worker_shutting_down.disconnect(shutting_down)
        return int(worker.exitcode or 0)

    def shutdown(self) -> None:
        """Close this process's dispatchers and the broker connections."""
        with self._lock:
            dispatchers, self._dispatchers = self._dispatchers, []
        for pid, dispatcher in dispatchers:
            if pid == os.getpid():
                dispatcher.close()
        self.celery.close()


def _celery_config(broker_url: str, queue: str) -> dict[str, Any]:
    """Celery settings: JSON only, tasks acknowledged after they ran (the outbox
    makes a task safe to run twice), one task per worker thread at a time so that
    several workers share a fan-out, and no remote control or events to clean up."""
    config: dict[str, Any] = {
        "task_default_queue": queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "worker_enable_remote_control": False,
        "worker_send_task_events": False,
        "worker_redirect_stdouts": False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": BROKER_CONNECT_TIMEOUT,
        # a send waits at most about a second for a broker that refuses connections
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    }
    if urlsplit(broker_url).scheme in ("redis", "rediss"):
        config["broker_transport_options"] = {
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT,
            "socket_timeout": BROKER_ANSWER_TIMEOUT,
        }
    return config
