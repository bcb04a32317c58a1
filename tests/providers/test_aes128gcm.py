"""RFC 8291 encryption (flask_push.providers.aes128gcm) against http_ece's decryption.

Every Web Push the suite delivers is also decrypted by the fake push service (with
http_ece), by the web-push-testing peer (Node.js) and, in the browser tests, by
Chromium; these tests pin the format itself.
"""

from __future__ import annotations

import struct

import http_ece
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from flask_push.providers import aes128gcm
from flask_push.providers.webpush import encrypted_size


def subscriber() -> tuple[ec.EllipticCurvePrivateKey, bytes, bytes]:
    """A browser's key pair and auth secret, as it makes them."""
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return key, point, bytes(range(16))


@pytest.mark.parametrize("size", [1, 200, 3993, 4079])
def test_http_ece_decrypts_what_it_encrypts(size: int) -> None:
    key, p256dh, auth = subscriber()
    plaintext = bytes(i % 251 for i in range(size))
    body = aes128gcm.encrypt(plaintext, p256dh, auth)
    assert len(body) == encrypted_size(size)
    assert http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm") == (
        plaintext
    )


def test_the_header_carries_salt_record_size_and_a_fresh_sender_key() -> None:
    _, p256dh, auth = subscriber()
    first, second = (aes128gcm.encrypt(b"hello", p256dh, auth) for _ in range(2))
    for body in (first, second):
        record_size, key_length = struct.unpack("!IB", body[16:21])
        assert (record_size, key_length) == (4096, 65)
        assert body[21] == 4  # an uncompressed P-256 point
    # a fresh salt and ephemeral key for every message
    assert first[:16] != second[:16]
    assert first[21:86] != second[21:86]


def test_the_wrong_auth_secret_does_not_decrypt() -> None:
    key, p256dh, auth = subscriber()
    body = aes128gcm.encrypt(b"hello", p256dh, auth)
    with pytest.raises(Exception):  # noqa: B017 - http_ece raises cryptography's InvalidTag
        http_ece.decrypt(body, private_key=key, auth_secret=bytes(16), version="aes128gcm")


def test_refuses_a_key_off_the_curve_and_a_payload_over_one_record() -> None:
    _, p256dh, auth = subscriber()
    with pytest.raises(ValueError, match="p256dh is not a point on P-256"):
        aes128gcm.encrypt(b"x", b"\x04" + bytes(64), auth)
    with pytest.raises(ValueError, match="do not fit one 4096-byte"):
        aes128gcm.encrypt(bytes(4080), p256dh, auth)
