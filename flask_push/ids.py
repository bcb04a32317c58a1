"""Identifiers for rows that the API exposes.

Ids are ``<prefix>_<ULID>``: 48 bits of milliseconds then 80 random bits in
Crockford base32. They sort by creation time, cannot be guessed (an anonymous
subscriber's id is its only credential), and the prefix tells a subscription
from an installation, which ``notify_by_id`` relies on.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str) -> str:
    """Return a fresh id such as ``sub_01JD3X9K8Q4M2V7T5R1N6B0C9A``."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"
