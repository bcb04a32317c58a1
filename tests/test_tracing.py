"""OpenTelemetry spans: a send, each provider batch, and the link across a worker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flask_push.models import utcnow
from flask_push.testing import FakePushService

from conftest import as_user, db, push, subscribe

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    """The SDK, set up once per process (OpenTelemetry refuses a second global provider)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(sdk)
    return sdk


@pytest.fixture
def spans(provider: TracerProvider) -> Iterator[Callable[[str], list[ReadableSpan]]]:
    _EXPORTER.clear()

    def named(name: str) -> list[ReadableSpan]:
        return [span for span in _EXPORTER.get_finished_spans() if span.name == name]

    yield named
    _EXPORTER.clear()


def test_send_and_each_provider_batch_are_spans(
    sending_app: Callable[..., Flask], push_fake_webpush: FakePushService, spans: Any
) -> None:
    app = sending_app()
    ok, dead = push_fake_webpush.subscribe(), push_fake_webpush.subscribe()
    dead.expire()
    tracer = trace.get_tracer("test")
    with app.app_context():
        for subscriber in (ok, dead):
            subscribe(subscriber)
        with tracer.start_as_current_span("POST /checkout") as request_span:
            message = push.send(users=["alice"], title="Order #42")
    [send] = spans("flask_push.send")
    assert send.parent is not None
    assert send.parent.span_id == request_span.get_span_context().span_id
    assert send.attributes is not None
    assert send.attributes["flask_push.message_id"] == message.id
    assert send.attributes["flask_push.recipient_count"] == 2
    assert send.attributes["flask_push.audience"] == "users"
    delivers = spans("flask_push.deliver")
    assert delivers
    outcomes: dict[str, int] = {}
    for span in delivers:
        assert span.attributes is not None
        assert span.attributes["flask_push.provider"] == "webpush"
        for key, value in span.attributes.items():
            if key.startswith("flask_push.outcome."):
                name = key.removeprefix("flask_push.outcome.")
                outcomes[name] = outcomes.get(name, 0) + int(value)  # type: ignore[call-overload]
        assert [link.context.span_id for link in span.links] == [
            send.context.span_id  # type: ignore[union-attr]
        ]
    assert outcomes == {"sent": 1, "gone": 1}
    assert sum(span.attributes["flask_push.batch_size"] for span in delivers) == 2  # type: ignore[index,misc]


def test_a_worker_links_to_the_request_that_sent(
    sending_app: Callable[..., Flask],
    make_app: Callable[..., Flask],
    push_fake_webpush: FakePushService,
    spans: Any,
) -> None:
    """The trace context travels in the message row: a worker of another app on the
    same database (another process, as far as it can tell) links to the send."""
    web = sending_app()
    worker = sending_app()
    subscriber = push_fake_webpush.subscribe()
    with web.app_context():
        subscribe(subscriber)
        response = web.test_client().post(
            "/push/messages",
            json={
                "audience": {"users": ["alice"]},
                "notification": {
                    "title": "Later",
                    "sendAt": (utcnow() + timedelta(hours=1)).isoformat(),
                },
            },
            headers=as_user("ops", admin=True),
        )
        assert response.status_code == 202, response.get_json()
        message_id = response.get_json()["id"]
        model = push.models.Delivery
        db.session.execute(
            sa.update(model).where(model.message_id == message_id).values(due_at=utcnow())
        )
        db.session.commit()
        traceparent = db.session.scalar(
            sa.select(push.models.Message.traceparent).where(push.models.Message.id == message_id)
        )
    [send] = spans("flask_push.send")
    assert traceparent.split("-")[2] == format(send.context.span_id, "016x")  # type: ignore[union-attr]
    assert spans("flask_push.deliver") == []
    with worker.app_context():
        assert push.dispatch_due() == 1
    [deliver] = spans("flask_push.deliver")
    [link] = deliver.links
    assert link.context.trace_id == send.context.trace_id  # type: ignore[union-attr]
    assert link.context.span_id == send.context.span_id  # type: ignore[union-attr]
    assert link.context.is_remote
    assert len(subscriber.received) == 1


ROOT = Path(__file__).resolve().parent.parent


def test_without_opentelemetry_nothing_is_traced(tmp_path: Path) -> None:
    """A host without opentelemetry-api: sends work, and the row keeps no trace context."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'opentelemetry' or name.startswith('opentelemetry.'):\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    code = (
        "from flask import Flask\n"
        "from flask_sqlalchemy import SQLAlchemy\n"
        "from flask_push import Push, tracing\n"
        "db = SQLAlchemy(); push = Push(db=db)\n"
        "app = Flask(__name__)\n"
        "app.config.update(SQLALCHEMY_DATABASE_URI='sqlite://', TESTING=True)\n"
        "db.init_app(app); push.init_app(app)\n"
        "with app.app_context():\n"
        "    db.create_all()\n"
        "    message = push.send(everyone=True, title='hi')\n"
        "    print(tracing.ENABLED, message.audience)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False {'everyone': True}"
