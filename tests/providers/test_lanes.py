"""Concurrency per push service: one that never answers holds only its own slots."""

from __future__ import annotations

import asyncio
from typing import Any

from flask_push.credentials import WEBPUSH
from flask_push.message import DeliveryResult, Notification, OutgoingPush, WebPushTarget
from flask_push.providers.memory import MemoryProvider
from flask_push.providers.webpush import WebPushProvider
from flask_push.testing import FakePushService, FakeSubscriber

from conftest import browser_keys
from faults import SilentService


def make_provider(key: str, **options: Any) -> WebPushProvider:
    settings = WEBPUSH.normalize({"privateKey": key, "subject": "mailto:ops@example.com"})
    return WebPushProvider.from_settings(
        settings, allow_http=True, allow_private_hosts=["127.0.0.1"], **options
    )


def to(endpoint: str, subscriber: FakeSubscriber | None = None) -> WebPushTarget:
    if subscriber is not None:
        return WebPushTarget(subscriber.endpoint, subscriber.p256dh, subscriber.auth)
    keys = browser_keys()
    return WebPushTarget(endpoint, keys["p256dh"], keys["auth"])


def outgoing(target: WebPushTarget, number: int) -> OutgoingPush:
    return OutgoingPush(f"dlv_{number}", f"msg_{number}", Notification(title="Hi"), target)


def test_a_push_service_that_never_answers_holds_only_its_own_slots(
    vapid_private_key: str,
) -> None:
    # 4 requests in flight in all, 2 per push service (half, by default)
    provider = make_provider(vapid_private_key, concurrency=4, timeout=30.0)
    provider.stall_after = 60.0  # "full", not yet "stalled", however slow the machine
    with SilentService() as silent, FakePushService() as healthy:
        hung = [outgoing(to(f"{silent.origin}/push/{i}"), i) for i in range(6)]
        answered = [outgoing(to("", healthy.subscribe()), 10 + i) for i in range(6)]
        seen: dict[str, Any] = {}

        async def scenario() -> list[DeliveryResult]:
            # the silent service's pushes first: they would take every slot
            sending = asyncio.ensure_future(provider.send_batch(hung + answered))
            # the silent service counts a request once its thread has read it, which
            # on a busy machine can come after the healthy pushes have all arrived
            for _ in range(1000):
                if len(healthy.pushes) == 6 and silent.requests >= 2:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # time for a third request, were one let through
            seen["healthy"] = len(healthy.pushes)
            seen["silent"] = silent.requests
            silent.close()  # its requests fail now, instead of timing out
            try:
                return await sending
            finally:
                await provider.aclose()

        results = asyncio.run(scenario())

    # every healthy push arrived while the silent service held just its 2 slots
    assert seen == {"healthy": 6, "silent": 2}
    assert provider.lane_concurrency == 2
    assert [r.status for r in results] == ["retry"] * 6 + ["sent"] * 6


def test_a_lane_is_stalled_once_its_requests_go_unanswered(vapid_private_key: str) -> None:
    provider = make_provider(vapid_private_key, concurrency=2, timeout=30.0)
    provider.stall_after = 3600.0
    states: list[str] = []

    async def until(state: str) -> None:
        for _ in range(1000):
            states.append(provider.lane_state(silent.origin))
            if states[-1] == state:
                return
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        pushes = [outgoing(to(f"{silent.origin}/push/{i}"), i) for i in range(2)]
        sending = asyncio.ensure_future(provider.send_batch(pushes))
        await until("full")  # its one slot is taken, the request is young
        provider.stall_after = 0.2
        await until("stalled")  # ... and went unanswered for that long
        silent.close()
        await sending
        await provider.aclose()
        states.append(provider.lane_state(silent.origin))

    with SilentService() as silent:
        asyncio.run(scenario())
    # open until the slot is taken; open again once the requests are over
    assert [state for i, state in enumerate(states) if state != states[i - 1] or i == 0] == [
        "open",
        "full",
        "stalled",
        "open",
    ]


def test_lanes_of_one_endpoint_providers_and_of_web_push(vapid_private_key: str) -> None:
    provider = make_provider(vapid_private_key)
    lanes = {
        provider.lane(outgoing(to(endpoint), 0))
        for endpoint in (
            "https://updates.push.services.mozilla.com/wpush/v2/x",
            "HTTPS://Updates.Push.Services.Mozilla.com:443/wpush/v2/y",
            "https://updates.push.services.mozilla.com:443?z",
            # one push service whatever the port, a trailing dot or a fragment: else
            # each spelling, a subscriber's choice, would be a lane of its own
            "https://updates.push.services.mozilla.com:1/wpush/v2/x",
            "https://updates.push.services.mozilla.com:8443/wpush/v2/x",
            "https://updates.push.services.mozilla.com./wpush/v2/x",
            "https://updates.push.services.mozilla.com#1/wpush/v2/x",
        )
    }
    assert lanes == {"https://updates.push.services.mozilla.com"}
    push = outgoing(to("http://127.0.0.1:8080/push/1"), 0)
    assert provider.lane(push) == "http://127.0.0.1:8080"  # an address keeps its port
    assert provider.lane(outgoing(to("https://[::1]:8443/push/1"), 0)) == "https://[::1]:8443"
    assert (provider.concurrency, provider.lane_concurrency) == (200, 100)
    memory = MemoryProvider("fcm", concurrency=50)
    assert memory.lane(push) == "memory" and memory.lane_concurrency == 50
