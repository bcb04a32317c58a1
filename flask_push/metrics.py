"""Prometheus metrics of one app (``PUSH_METRICS``), served at ``<prefix>/metrics``.

``prometheus_client`` is imported here only, and this module only when
``PUSH_METRICS`` is on, so a host without it runs as before.

- ``flask_push_deliveries_total{provider,outcome}`` is counted where outcomes
  are written: by the dispatcher, a batch at a time; by a send, for what ends at
  once (held back by the policy, superseded, without a provider); and by an
  operator's cancel and retry.
  ``flask_push_delivery_seconds{provider}`` is counted by the dispatcher. In one
  process they live in the app's own
  :class:`~prometheus_client.CollectorRegistry` (two apps in one process do not
  collide). With ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client's
  multiprocess mode keeps them in files there, and a scrape of any process sums
  every process's (gunicorn workers, Celery workers, ``flask push worker``).
- ``flask_push_credentials_refused_total{provider}``: the pushes a push service
  refused for flask-push's credentials, counted by the dispatcher; any is worth an
  alert (for Web Push it also counts each subscription made for another VAPID key).
- ``flask_push_outbox_due`` and ``flask_push_outbox_oldest_due_seconds`` are read
  from the database at scrape time, so they are right whichever process delivers.
- ``flask_push_ws_connections`` is this process's open websockets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping

from .errors import PushConfigError, install_command

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client import multiprocess as _multiprocess
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from prometheus_client.registry import Collector
except ModuleNotFoundError as err:
    if err.name != "prometheus_client":
        raise
    # Imported before any init_app could check PUSH_METRICS (a gunicorn.conf.py's
    # child_exit hook imports mark_process_dead): say which extra brings it.
    raise ModuleNotFoundError(
        f"flask_push.metrics needs flask-push's 'metrics' extra ({err.name!r} is not "
        f"installed): {install_command('metrics')}",
        name=err.name,
    ) from err
from .outbox_state import OutboxState

logger = logging.getLogger("flask_push")

#: the content type of the text exposition format the scrape answers with
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: the labels of ``flask_push_deliveries_total``: the provider kind, and the outcome
#: written (a delivery's final status, or ``retry`` when a retry was scheduled)
OUTCOME_LABELS = ("provider", "outcome")


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode, when it is on."""
    # prometheus_client reads both spellings (the lowercase one is deprecated)
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class _LiveGauges(Collector):
    """The gauges read at scrape time: the outbox from the database, the websockets
    from this process."""

    def __init__(
        self, outbox: Callable[[], OutboxState], ws_connections: Callable[[], int]
    ) -> None:
        self._outbox = outbox
        self._ws_connections = ws_connections

    def describe(self) -> Iterable[Metric]:
        # Names only: registering must not query the database.
        return self._families()

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "flask_push_outbox_due", "Queued deliveries whose time has come, not sent yet."
            ),
            GaugeMetricFamily(
                "flask_push_outbox_oldest_due_seconds",
                "Seconds the oldest due delivery has waited (0 when none is due).",
            ),
            GaugeMetricFamily(
                "flask_push_ws_connections", "Open websocket connections of this process."
            ),
        ]

    def collect(self) -> Iterator[Metric]:
        due, oldest, ws = self._families()
        try:
            state = self._outbox()
        except Exception as err:  # noqa: BLE001 - a scrape must still answer
            # Without the database the outbox gauges are absent, not a wrong 0:
            # alert on absent() or on /health.
            logger.warning("flask-push: metrics could not read the outbox: %s", err)
        else:
            due.add_metric([], state.due)
            oldest.add_metric([], state.oldest_due_seconds or 0.0)
            yield due
            yield oldest
        ws.add_metric([], self._ws_connections())
        yield ws


class Metrics:
    """One app's metrics: the counters the dispatcher feeds and the registry a
    scrape renders.

    :param outbox: reads the outbox's state (in the scrape's app context).
    :param ws_connections: this process's open websockets.
    """

    def __init__(
        self, outbox: Callable[[], OutboxState], ws_connections: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry()
        folder = multiprocess_dir()
        self.multiprocess = folder is not None
        if folder is not None and not os.path.isdir(folder):
            # prometheus_client would say only "not set or not a directory", from
            # init_app, as a traceback through the app's factory
            raise PushConfigError(
                f"PROMETHEUS_MULTIPROC_DIR is {folder!r}, which is not a directory: make "
                "it (empty) before the app's processes start, or unset it to count in "
                "each process alone"
            )
        # In multiprocess mode the values live in files, summed by the collector at
        # scrape time; registering them here as well would count this process twice.
        own = None if self.multiprocess else self.registry
        self.deliveries = Counter(
            "flask_push_deliveries",
            "Deliveries by provider and outcome (sent, gone, failed, expired, retry, ...).",
            OUTCOME_LABELS,
            registry=own,
        )
        self.credentials_refused = Counter(
            "flask_push_credentials_refused",
            "Pushes a push service refused for flask-push's credentials (its key, token or "
            "VAPID signature), by provider: alert on any.",
            ("provider",),
            registry=own,
        )
        self.seconds = Histogram(
            "flask_push_delivery_seconds",
            "Round trips to the push services, in seconds.",
            ("provider",),
            registry=own,
        )
        if self.multiprocess:
            _multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self.registry.register(_LiveGauges(outbox, ws_connections))

    def count(self, outcomes: Mapping[tuple[str, str], int]) -> None:
        """Add a batch of outcomes, ``{(provider, outcome): how many}``."""
        for (provider, outcome), n in outcomes.items():
            if n:
                self.deliveries.labels(provider, outcome).inc(n)

    def refused(self, providers: Mapping[str, int]) -> None:
        """Add a batch of pushes refused for the credentials, ``{provider: how many}``."""
        for provider, n in providers.items():
            if n:
                self.credentials_refused.labels(provider).inc(n)

    def observe(self, provider: str, seconds: Iterable[float]) -> None:
        """Add a batch of ``provider``'s round trips."""
        histogram = self.seconds.labels(provider)
        for value in seconds:
            histogram.observe(value)

    def render(self) -> bytes:
        """The registry in Prometheus' text format (:data:`CONTENT_TYPE`)."""
        return bytes(generate_latest(self.registry))


def mark_process_dead(pid: int) -> None:
    """Forget a dead process's live gauges in multiprocess mode: call it from
    gunicorn's ``child_exit`` hook (counters and histograms are kept)."""
    if multiprocess_dir() is not None:
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
