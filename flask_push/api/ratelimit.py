"""``PUSH_SUBSCRIBE_RATE_LIMIT``: how many ``POST /subscriptions`` one client may make.

A browser subscribes once, and again on a page reload at most; a client far
above that is a script filling the table with subscriptions, each of them a
recipient of every ``everyone`` send.

When the host has set up Flask-Limiter on the app, the limit is applied through
the host's limiter: its storage (shared by all processes and hosts) and its key
function (which knows the host's proxies). Otherwise ``limits`` (Flask-Limiter's
own core) counts in this process's memory, by the client's address.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from typing import Any

import limits
from flask import current_app, request
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

from .http import ApiError

#: the namespace of our counters in the ``limits`` storage
_SCOPE = "flask_push:subscribe"


class ClientLimiter:
    """A moving window per client address, kept in this process's memory.

    A moving window, unlike a fixed one, never lets a client make twice the limit
    across the turn of a window.
    """

    def __init__(self, rate: str) -> None:
        self.items = limits.parse_many(rate)
        self._strategy: MovingWindowRateLimiter | None = None
        self._lock = threading.Lock()

    def _counter(self) -> MovingWindowRateLimiter:
        # Made on first use: the memory storage starts a timer thread.
        with self._lock:
            if self._strategy is None:
                self._strategy = MovingWindowRateLimiter(MemoryStorage())
            return self._strategy

    def hit(self, client: str) -> int | None:
        """Count one request of ``client``; when it is over a limit, the seconds
        until it may try again."""
        counter = self._counter()
        for item in self.items:
            if not counter.hit(item, _SCOPE, client):
                reset = counter.get_window_stats(item, _SCOPE, client).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None


def client_address() -> str:
    """The client's address; for IPv6, its /64 network, which one client usually has
    whole (a host can take a fresh address in it for every request)."""
    address = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:203.0.113.9 is an IPv4 client
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def check_subscribe() -> None:
    """Count this ``POST /subscriptions``; a 429 with ``Retry-After`` when over the limit."""
    state = current_app.extensions["push"]
    rate: str | None = state.settings.subscribe_rate_limit
    if rate is None:
        return
    host = _host_limiter()
    if host is not None:
        retry_after = _check_with_host(host, rate)
    else:
        with state.lock:
            if state.subscribe_limiter is None:
                state.subscribe_limiter = ClientLimiter(rate)
            limiter: ClientLimiter = state.subscribe_limiter
        retry_after = limiter.hit(client_address())
    if retry_after is not None:
        raise ApiError(
            429,
            "rate_limited",
            f"Too many subscriptions from this client: at most {rate}. "
            f"Try again in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
        )


def _host_limiter() -> Any | None:
    """A Flask-Limiter ``Limiter`` set up on the app, if any.

    Flask-Limiter keeps the limiters of an app in a set under
    ``app.extensions["limiter"]``.
    """
    found = current_app.extensions.get("limiter")
    if found is None:
        return None
    candidates = [found] if hasattr(found, "limit") else list(found)
    return next((limiter for limiter in candidates if hasattr(limiter, "limit")), None)


def _check_with_host(limiter: Any, rate: str) -> int | None:
    """Count this request with the host's limiter (Flask-Limiter 2.9 and later take
    ``limit()`` as a context manager inside a view); the seconds to wait when over."""
    try:
        with limiter.limit(rate):
            pass
    except TooManyRequests:
        current = getattr(limiter, "current_limit", None)
        reset_at = getattr(current, "reset_at", None)
        if reset_at is None:  # no details: the longest window of the rate is safe
            return max(item.get_expiry() for item in limits.parse_many(rate))
        return max(1, int(reset_at - time.time()))  # reset_at is rounded up already
    return None
