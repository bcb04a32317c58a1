"""OpenTelemetry spans, when ``opentelemetry-api`` is importable; nothing otherwise.

- ``push.send()`` (and ``notify_by_id``, ``POST /messages``) is a span
  ``flask_push.send``, a child of whatever span is current (the request's);
- each batch of outcomes the dispatcher writes is, per provider, a span
  ``flask_push.deliver`` (attributes: provider, batch size, outcomes) whose
  links point at the ``flask_push.send`` spans of its messages.

The trace context travels with the message: the send span's W3C ``traceparent``
is kept in the message row (``push_messages.traceparent``), so a
worker in another process or on another host links to the request that sent.
The host configures the SDK (exporters, sampling) as usual; flask-push only uses
the API. Without the SDK every span is a no-op and nothing is read for links.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - tested in a process without it
    trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.trace import Span

#: the instrumentation scope's name
SCOPE = "flask_push"

#: whether spans are made at all (``opentelemetry-api`` is importable)
ENABLED = trace is not None


@contextmanager
def send_span(attributes: Mapping[str, Any]) -> Iterator[Span | None]:
    """The span of one send, current inside the block; None without OpenTelemetry."""
    if trace is None:
        yield None
        return
    tracer = trace.get_tracer(SCOPE)
    with tracer.start_as_current_span(
        "flask_push.send", kind=trace.SpanKind.PRODUCER, attributes=dict(attributes)
    ) as span:
        yield span


def traceparent(span: Span | None) -> str | None:
    """``span``'s W3C traceparent, for the message row; None when it is not recorded."""
    if trace is None or span is None or not span.is_recording():
        return None
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


@contextmanager
def deliver_span(provider: str, outcomes: Mapping[str, int]) -> Iterator[Span | None]:
    """The span of one provider's batch of outcomes, ended when the block ends;
    None without OpenTelemetry. Link it with :func:`link` while it is open."""
    if trace is None:
        yield None
        return
    span = trace.get_tracer(SCOPE).start_span(
        "flask_push.deliver",
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "flask_push.provider": provider,
            "flask_push.batch_size": sum(outcomes.values()),
            **{f"flask_push.outcome.{name}": n for name, n in outcomes.items()},
        },
    )
    try:
        yield span
    finally:
        span.end()


def recording(span: Span | None) -> bool:
    """Whether ``span`` is recorded (an SDK is set up and sampled it), so that its
    links are worth reading from the database."""
    return span is not None and span.is_recording()


def link(span: Span, parents: Iterable[str]) -> None:
    """Link ``span`` to the spans of these traceparents (the messages' sends)."""
    if trace is None:
        return
    propagator = TraceContextTextMapPropagator()
    for value in parents:
        context = trace.get_current_span(
            propagator.extract({"traceparent": value})
        ).get_span_context()
        if context.is_valid:
            span.add_link(context)
