"""RFC 8291 message encryption for Web Push: the ``aes128gcm`` content coding of
RFC 8188 with keys from ECDH on P-256, in one record.

http_ece implements the whole of RFC 8188 (any record size, several records,
the older ``aesgcm`` coding) and spends more Python per message on that
generality than on the cryptography; a fan-out encrypts once per subscriber, so
this module does only what Web Push needs, with cryptography's primitives:
ECDH, HKDF-SHA-256 and AES-128-GCM. Its output is what http_ece's
``encrypt(..., version="aes128gcm")`` makes of a payload that fits one record,
and the test suite decrypts it with http_ece, a Node.js push service and
Chromium.
"""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

#: the record size written in the header; a payload must fit one record
RECORD_SIZE = 4096
#: salt (16), record size (4), key id length (1), key id: the sender's public key (65)
HEADER_SIZE = 16 + 4 + 1 + 65
#: the padding delimiter (1) and the AES-GCM tag (16) of a record
RECORD_OVERHEAD = 1 + 16

_CURVE = ec.SECP256R1()
_KEY_INFO = b"WebPush: info\x00"
_CEK_INFO = b"Content-Encoding: aes128gcm\x00"
_NONCE_INFO = b"Content-Encoding: nonce\x00"
#: the delimiter of the last (here, only) record
_LAST = b"\x02"


def encrypt(plaintext: bytes, p256dh: bytes, auth: bytes) -> bytes:
    """``plaintext`` encrypted for the subscriber whose public key (an uncompressed
    P-256 point) and auth secret (16 bytes) are ``p256dh`` and ``auth``, with a
    fresh ephemeral key and salt, as every message must have.

    :raises ValueError: for a key that is not a point on the curve, or a
        payload that does not fit one record.
    """
    if len(plaintext) + RECORD_OVERHEAD > RECORD_SIZE:
        raise ValueError(
            f"{len(plaintext)} bytes do not fit one {RECORD_SIZE}-byte aes128gcm record"
        )
    try:
        subscriber = ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, p256dh)
    except ValueError as err:
        raise ValueError(f"the subscription's p256dh is not a point on P-256 ({err})") from err
    ephemeral = ec.generate_private_key(_CURVE)
    shared = ephemeral.exchange(ec.ECDH(), subscriber)
    sender = ephemeral.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    # RFC 8291 section 3.4: the input keying material, from the shared secret
    ikm = HKDF(SHA256(), 32, salt=auth, info=_KEY_INFO + p256dh + sender).derive(shared)
    # RFC 8188 section 2.2 and 2.3: the content encryption key and the nonce
    salt = os.urandom(16)
    key = HKDF(SHA256(), 16, salt=salt, info=_CEK_INFO).derive(ikm)
    nonce = HKDF(SHA256(), 12, salt=salt, info=_NONCE_INFO).derive(ikm)
    sealed = AESGCM(key).encrypt(nonce, plaintext + _LAST, None)
    return salt + struct.pack("!IB", RECORD_SIZE, len(sender)) + sender + sealed
