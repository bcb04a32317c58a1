"""An aioapns client aimed at a FakeAPNs, and a close that waits until it is closed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aioapns import APNs

from flask_push.testing.apns import FakeAPNs


def client(fake: FakeAPNs, key: tuple[str, str, str], **options: Any) -> APNs:
    """An aioapns client aimed at the fake, for its only topic; call inside the running loop."""
    key_pem, key_id, team_id = key
    [topic] = fake.topics
    apns = APNs(
        key=key_pem,
        key_id=key_id,
        team_id=team_id,
        topic=topic,
        use_sandbox=True,
        ssl_context=fake.client_ssl_context(),
        **options,
    )
    apns.pool.protocol_class = fake.aioapns_protocol_class()
    return apns


async def close(apns: APNs) -> None:
    """Close the pool and wait until every connection is really gone.

    aioapns has no ``close()`` of its own; ``pool.close()`` only starts closing the
    transports, and the loop must keep running until ``connection_lost`` has run
    (which takes the connection out of ``pool.connections``), or the transports are
    left unclosed.
    """
    apns.pool.close()
    deadline = time.monotonic() + 5
    while apns.pool.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert not apns.pool.connections, "aioapns connections did not close"
